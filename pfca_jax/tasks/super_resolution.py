"""Super-resolution: the L1 loss and the BasicSR-faithful evaluation, as the task the trainer runs.

Evaluation works on whole images, one at a time: the residual body, where every attention is, sees
the whole LR image, and the upsampling tail goes in overlapping tiles of one fixed shape, so the
scores are those of the function that was trained, for every attention, with bounded memory on the
HR side (`pfca_jax.tasks.tiling.Upscaler`). The output is clipped to [0, 255] and rounded like a saved
8-bit image, then scored with PSNR/SSIM on the BT.601 Y channel after
cropping `scale` border pixels (docs/training.md, "Super-resolution evaluation"); RGB PSNR is reported too, and the same
Y scores of bicubic upscaling (MATLAB imresize) as the reference every model must beat. Each process
scores its own share of the images on its own devices; the sums are then added over processes.
Every image's scores are kept in `per_image` (results.json): with several processes, those of
process 0's share only.
"""

import os
import time

import jax
import numpy as np
from jax.experimental import multihost_utils

from pfca_jax import metrics
from pfca_jax.train import progress
from pfca_jax.tasks import tiling
from pfca_jax.data import sr_folders
from pfca_jax.data import super_resolution as sr_data
from pfca_jax.errors import UserError
from pfca_jax.imresize import imresize
from pfca_jax.tasks.losses import l1_loss
from pfca_jax.tasks.tiling import to_uint8
from pfca_jax.train.validation import create_model

# Folder names that say "the HR images of a set", so the set is named after the folder above.
_HR_FOLDER_NAMES = {'hr', 'gt', 'gtmod12', 'original', 'image_srf_2', 'image_srf_3', 'image_srf_4'}


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


class SuperResolutionTask:
  """DIV2K training patches, L1 loss, PSNR/SSIM on DIV2K validation and benchmark folders."""
  input_key = 'lr'

  def __init__(self, config):
    self.config = config
    create_model(config, scale=config.scale)  # Names, options and the scale before any data access.
    self.folders = parse_folders(config.eval_folders)
    try:
      tiling.check_upscale_tiles(config.eval_tile, config.eval_tile_overlap)
    except ValueError as e:
      raise UserError(f'eval_tile={config.eval_tile}, eval_tile_overlap={config.eval_tile_overlap}: {e}') from None

  def open_data(self) -> None:
    self.info = sr_data.dataset_info(self.config)

  def create_model(self):
    self.model = create_model(self.config, scale=self.config.scale)
    return self.model

  def input_shape(self) -> tuple:
    return (1, self.info.lr_patch, self.info.lr_patch, 3)

  def steps_per_epoch(self) -> int:
    return sr_data.steps_per_epoch(self.info, self.config)

  def train_batches(self, start_step: int):
    return sr_data.train_iterator(self.config, self.info, start_step=start_step)

  def loss(self, outputs, batch):
    return l1_loss(outputs, batch)

  def build_eval(self, state_shardings, mesh) -> None:
    del state_shardings, mesh  # Evaluation runs on this process's devices only (see the module docstring).
    self._upscaler = tiling.Upscaler(self.model, tile=self.config.eval_tile, overlap=self.config.eval_tile_overlap,
                                     devices=jax.local_devices())

  def _sets(self):
    config = self.config
    yield config.dataset, lambda: sr_data.eval_images(config)
    for name, hr_dir, lr_dir in self.folders:
      yield name, lambda h=hr_dir, l=lr_dir: self._local_share(
          sr_folders.folder_images(h, config.scale, lr_dir=l, downscale=imresize))

  @staticmethod
  def _local_share(images):
    for i, image in enumerate(images):
      if i % jax.process_count() == jax.process_index():
        yield image

  def evaluate(self, state, step: int, reporter) -> dict:
    """Mean Y-PSNR, Y-SSIM, RGB PSNR (and bicubic's Y scores) per set, as {'eval/<set>/<metric>': value}."""
    config = self.config
    # This process's replica of the (replicated) parameters, placed on its own devices.
    upscale = self._upscaler.use(jax.tree.map(lambda x: x.addressable_data(0), {'params': state.params}))
    results, self.per_image = {}, {}
    for name, images in self._sets():
      t0 = time.perf_counter()
      sums = np.zeros(6)  # count, psnr_y, ssim_y, psnr_rgb, bicubic psnr_y, bicubic ssim_y
      rows = self.per_image[name] = []
      bar = progress.Progress(None, f'eval {name}', 'image', leave=False, enabled=jax.process_index() == 0)
      for i, image in enumerate(bar.wrap(images())):
        if 0 <= config.eval_max_images <= i * jax.process_count():
          break
        lr = image['lr'].astype(np.float32) / 255.0
        sr_image = to_uint8(upscale(lr))
        bicubic = imresize(image['lr'], config.scale)
        scores = [metrics.psnr(sr_image, image['hr'], config.scale), metrics.ssim(sr_image, image['hr'], config.scale),
                  metrics.psnr(sr_image, image['hr'], config.scale, y_channel=False),
                  metrics.psnr(bicubic, image['hr'], config.scale), metrics.ssim(bicubic, image['hr'], config.scale)]
        sums += [1] + scores
        rows.append(dict(zip(('name', 'psnr_y', 'ssim_y', 'psnr_rgb', 'bicubic_psnr_y', 'bicubic_ssim_y'),
                             [image['name']] + [float(v) for v in scores])))
        if i < config.eval_num_samples and jax.process_index() == 0:
          self._write_sample(reporter, step, name, image, bicubic, sr_image)
      bar.close()
      if jax.process_count() > 1:
        sums = np.asarray(multihost_utils.process_allgather(sums)).sum(axis=0)
      if sums[0] == 0:
        raise UserError(f'evaluation set {name!r} has no images')
      means = {'psnr_y': sums[1] / sums[0], 'ssim_y': sums[2] / sums[0], 'psnr_rgb': sums[3] / sums[0],
               'bicubic_psnr_y': sums[4] / sums[0], 'bicubic_ssim_y': sums[5] / sums[0], 'images': int(sums[0])}
      reporter.write_eval(step, name, means, time.perf_counter() - t0)
      if upscale.tiled_images:
        reporter.print(f'note: {upscale.tiled_images} image(s) of {name} are above {tiling.MAX_WHOLE_PIXELS:,} LR '
                       'pixels and went through the whole network in tiles: with attention, their scores are '
                       'those of per-tile statistics')
        upscale.tiled_images = 0
      results.update({f'eval/{name}/{k}': float(v) if k != 'images' else v for k, v in means.items()})
    return results

  def _write_sample(self, reporter, step, name, image, bicubic, sr_image):
    """LR (nearest) | bicubic | SR | HR side by side, to TensorBoard and WORKDIR/samples/."""
    scale = self.config.scale
    lr = image['lr']
    nearest = np.repeat(np.repeat(lr, scale, axis=0), scale, axis=1)
    panel = np.concatenate([nearest, bicubic, sr_image, image['hr']], axis=1)
    reporter.write_image(step, f'samples/{name}/{image["name"]}', panel)
