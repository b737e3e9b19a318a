"""Super-resolution: the L1 loss and the BasicSR-faithful evaluation, as the task the trainer runs.

Evaluation works on whole images, one at a time: the residual body, where every attention is, sees
the whole LR image, and the upsampling tail goes in overlapping tiles of one fixed shape, so the
scores are those of the function that was trained, for every attention, with bounded memory on the
HR side (`pfca_jax.tasks.tiling.Upscaler`). The output is clipped to [0, 255] and rounded like a saved
8-bit image, then scored with PSNR/SSIM on the BT.601 Y channel after
cropping `scale` border pixels (docs/training.md, "Super-resolution evaluation"); RGB PSNR is reported too, and the same
Y scores of bicubic upscaling (MATLAB imresize) as the reference every model must beat.

With several processes, each scores its own share of every set on its own devices (contiguous shares
of the TFDS split, round-robin ones of a folder), each image knowing its index in the set, so that
`eval_max_images` keeps the set's first N images whatever the process count. The rows of all
processes are then gathered and put in the set's order: `per_image` (results.json) lists every image
once, and the means are computed from those rows in that one order by the same code as with one
process, so they are bit-equal to a one-process evaluation of the same parameters.
"""

import json
import os
import time

import jax
import numpy as np
from jax.experimental import multihost_utils

from pfca_jax import metrics
from pfca_jax.train import progress, steps
from pfca_jax.tasks import tiling
from pfca_jax.data import epochs, sr_folders
from pfca_jax.errors import UserError
from pfca_jax.imresize import imresize
from pfca_jax.tasks.losses import l1_loss
from pfca_jax.tasks.tiling import to_uint8
from pfca_jax.tasks.base import Task

# Folder names that say "the HR images of a set", so the set is named after the folder above.
_HR_FOLDER_NAMES = {'hr', 'gt', 'gtmod12', 'original', 'image_srf_2', 'image_srf_3', 'image_srf_4'}
# An image's scores, as in `per_image` and (averaged) in the metrics.
_SCORES = ('psnr_y', 'ssim_y', 'psnr_rgb', 'bicubic_psnr_y', 'bicubic_ssim_y')


def parse_folders(text: str) -> list[tuple[str, str, str | None]]:
  """'A/HR|A/LR_x4,B' -> [(name, hr_dir, lr_dir)], failing in one line on a folder that does not exist."""
  folders = []
  for item in filter(None, (part.strip() for part in (text or '').split(','))):
    hr_dir, _, lr_dir = item.partition('|')
    for path in filter(None, (hr_dir, lr_dir)):
      if not os.path.isdir(path):
        raise UserError(f'eval folder {path!r} (from eval_folders={text!r}) is not a directory')
    base = os.path.basename(os.path.normpath(hr_dir))
    name = os.path.basename(os.path.dirname(os.path.normpath(hr_dir))) if base.lower() in _HR_FOLDER_NAMES else base
    folders.append((name or base, hr_dir, lr_dir or None))
  return folders


class SuperResolutionTask(Task):
  """DIV2K training patches, L1 loss, PSNR/SSIM on DIV2K validation and benchmark folders."""
  input_key = 'lr'

  def __init__(self, config):
    super().__init__(config, scale=config.scale)
    self.per_image = {}
    self.folders = parse_folders(config.eval_folders)
    for _, hr_dir, lr_dir in self.folders:  # Read at the first evaluation, hours in: checked now, from headers.
      try:
        sr_folders.check_folder(hr_dir, config.scale, lr_dir=lr_dir)
      except UserError as e:
        raise UserError(f'eval_folders entry {hr_dir + ("|" + lr_dir if lr_dir else "")!r}: {e}') from None
    try:
      tiling.check_upscale_tiles(config.eval_tile, config.eval_tile_overlap)
    except ValueError as e:
      raise UserError(f'eval_tile={config.eval_tile}, eval_tile_overlap={config.eval_tile_overlap}: {e}') from None

  def input_shape(self) -> tuple:
    return (1, self.info.lr_patch, self.info.lr_patch, 3)

  def loss(self, outputs, batch):
    return l1_loss(outputs, batch)

  def build_eval(self, state_shardings, mesh) -> None:
    del state_shardings, mesh  # Evaluation runs on this process's devices only (see the module docstring).
    self._upscaler = tiling.Upscaler(self.model, tile=self.config.eval_tile, overlap=self.config.eval_tile_overlap,
                                     devices=jax.local_devices())

  def _sets(self):
    """(name, images) per set, images() giving this process's share of the set's first eval_max_images."""
    config = self.config
    yield config.dataset, lambda: self.data.eval_images(config, max_images=config.eval_max_images)
    for name, hr_dir, lr_dir in self.folders:
      yield name, lambda h=hr_dir, l=lr_dir: self._local_share(
          sr_folders.folder_images(h, config.scale, lr_dir=l, downscale=imresize), config.eval_max_images)

  @staticmethod
  def _local_share(images, max_images: int = -1, *, process_index: int | None = None,
                   process_count: int | None = None):
    """Image i of the set (with its 'index' i) if i % process_count is this process, for i < max_images (if >= 0)."""
    process_index, process_count = epochs.process_index_count(process_index, process_count)
    for i, image in enumerate(images):
      if 0 <= max_images <= i:  # Counted over the whole set, so the first N whatever the process count.
        return
      if i % process_count == process_index:
        yield dict(image, index=i)

  def evaluate(self, state, step: int, reporter, stop=None) -> dict:
    """Mean Y-PSNR, Y-SSIM, RGB PSNR (and bicubic's Y scores) per set, as {'eval/<set>/<metric>': value}.

    stop: asked before each image; when it says True, steps.EvaluationStopped is raised (one process only:
    with several, the others would wait for this one at the gathering).
    """
    config = self.config
    # This process's replica of the (replicated) weights (the moving average's when kept), on its own devices.
    upscale = self._upscaler.use(jax.tree.map(lambda x: x.addressable_data(0), steps.eval_variables(state)))
    results, self.per_image = {}, {}
    for name, images in self._sets():
      t0 = time.perf_counter()
      rows = []  # [index in the set, per-image row] of this process's images.
      bar = progress.Progress(None, f'eval {name}', 'image', leave=False, enabled=jax.process_index() == 0)
      try:
        for image in bar.wrap(images()):
          if stop is not None and stop():
            raise steps.EvaluationStopped()
          lr = image['lr'].astype(np.float32) / 255.0
          sr_image = to_uint8(upscale(lr))
          bicubic = imresize(image['lr'], config.scale)
          scores = [metrics.psnr(sr_image, image['hr'], config.scale),
                    metrics.ssim(sr_image, image['hr'], config.scale),
                    metrics.psnr(sr_image, image['hr'], config.scale, y_channel=False),
                    metrics.psnr(bicubic, image['hr'], config.scale), metrics.ssim(bicubic, image['hr'], config.scale)]
          rows.append([image['index'], dict(name=image['name'], **dict(zip(_SCORES, map(float, scores))))])
          # Only process 0 writes files, so the samples are those of the set's first images it holds.
          if image['index'] < config.eval_num_samples and jax.process_index() == 0:
            self._write_sample(reporter, step, name, image, bicubic, sr_image)
      finally:
        bar.close()
      rows = self.per_image[name] = [row for _, row in gather_rows(rows, name)]
      if not rows:
        raise UserError(f'evaluation set {name!r} has no images')
      # Reduced in the set's order from the gathered rows, the same code whatever the process count, so the
      # means are bit-equal to a one-process evaluation (a sum per process, then over processes, would not be).
      table = np.array([[row[key] for key in _SCORES] for row in rows], np.float64)
      means = dict(zip(_SCORES, map(float, table.mean(axis=0))), images=len(rows))
      reporter.write_eval(step, name, means, time.perf_counter() - t0)
      if upscale.tiled_images:
        reporter.print(f'note: {upscale.tiled_images} image(s) of {name} are above {tiling.MAX_WHOLE_PIXELS:,} LR '
                       'pixels and went through the whole network in tiles: with attention, their scores are '
                       'those of per-tile statistics')
        upscale.tiled_images = 0
      results.update({f'eval/{name}/{k}': v for k, v in means.items()})
    return results

  def results_extra(self) -> dict:
    """Every image's scores of the last evaluation, per set (the comparison's per-image tables)."""
    return {'per_image': self.per_image} if self.per_image else {}

  def _write_sample(self, reporter, step, name, image, bicubic, sr_image):
    """LR (nearest) | bicubic | SR | HR side by side, to TensorBoard and WORKDIR/samples/."""
    scale = self.config.scale
    lr = image['lr']
    nearest = np.repeat(np.repeat(lr, scale, axis=0), scale, axis=1)
    panel = np.concatenate([nearest, bicubic, sr_image, image['hr']], axis=1)
    reporter.write_image(step, f'samples/{name}/{image["name"]}', panel)


def gather_rows(rows: list, name: str) -> list:
  """Every process's [index, row] pairs, sorted by index and checked to hold each index once from 0.

  They travel as JSON (a float's repr reads back to the same bits, inf and nan included) in uint8
  arrays padded to the longest: process_allgather needs one shape on every process, and without
  jax_enable_x64 it would turn float64 into float32, but uint8 stays exact.
  """
  if jax.process_count() > 1:
    payload = np.frombuffer(json.dumps(rows).encode(), np.uint8)
    sizes = np.asarray(multihost_utils.process_allgather(np.int32(payload.size)))
    padded = np.zeros(int(sizes.max()), np.uint8)
    padded[:payload.size] = payload
    gathered = np.asarray(multihost_utils.process_allgather(padded))
    rows = [row for size, data in zip(sizes, gathered) for row in json.loads(data[:size].tobytes())]
  rows = sorted(rows, key=lambda row: row[0])
  indices = [index for index, _ in rows]
  if indices != list(range(len(rows))):
    raise RuntimeError(f'evaluation set {name!r}: the processes scored images {indices}, not each of the first '
                       f'{len(rows)} once')
  return rows
