"""Synthetic super-resolution data (`config.dataset='synthetic'`): generated LR/HR pairs, no files, no TensorFlow.

For measuring the whole trainer and checking a machine, not for results. Training batches are patch
pairs of the config's sizes (hr_patch_size, hr_patch_size / scale) with the real pipeline's dtypes
and epoch length (config.synthetic.train_images images x patches_per_image per epoch); evaluation
scores config.synthetic.eval_images whole images of the fixed sizes `EVAL_HR_SIZES`, cycled.

The HR images are smooth random colour fields with fine noise, and each LR image is made from its
HR one as DIV2K's are (MATLAB-exact bicubic downscaling), so the mapping is one a working trainer
learns: the PSNR rises within a few hundred steps.

Speed: each process generates `TRAIN_BATCHES` distinct batches once and cycles through them (batch of
step s = batch s mod TRAIN_BATCHES): nothing to wait for, and a resumed run gets bit-identical batches.
"""

import functools
from typing import Iterator

import numpy as np

from pfca_jax.data import epochs, metadata
from pfca_jax.errors import UserError
from pfca_jax.imresize import imresize

TRAIN_BATCHES = 4
# HR (height, width) of the evaluation images, multiples of 12 so that every scale divides them: a
# square, a landscape and a portrait image, the largest DIV2K-like in proportion.
EVAL_HR_SIZES = ((192, 192), (288, 432), (480, 336))
_COARSE = 16  # HR pixels per random colour of the smooth field.

# Said on the console when a run starts: these numbers measure the machine, not the attention.
DESCRIPTION = (f'data: synthetic ({TRAIN_BATCHES} generated batches of patch pairs cycled, no files read): for '
               'measuring the trainer and checking a machine, not for results')

steps_per_epoch = metadata.sr_steps_per_epoch


def _check(config) -> None:
  metadata.check_sr_config(config)
  for field, minimum, which in (('train_images', 1, 'positive'), ('eval_images', 0, 'non-negative')):
    value = config.synthetic[field]
    if not isinstance(value, int) or value < minimum:
      raise UserError(f'config.synthetic.{field}={value!r} must be a {which} integer')


def dataset_info(config) -> metadata.SRInfo:
  """The sizes the config asks for; nothing is generated yet."""
  _check(config)
  return metadata.SRInfo(num_train_examples=config.synthetic.train_images, scale=config.scale,
                         lr_patch=config.hr_patch_size // config.scale, hr_patch=config.hr_patch_size)


def _hr_image(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
  """uint8 HxWx3: a bicubic-smoothed field of random colours plus fine Gaussian texture."""
  coarse = rng.uniform(0, 255, (-(-height // _COARSE), -(-width // _COARSE), 3))
  field = imresize(coarse, _COARSE)[:height, :width]
  return np.clip(np.rint(field + rng.normal(0, 8, field.shape)), 0, 255).astype(np.uint8)


def _pair(rng: np.random.Generator, hr_height: int, hr_width: int, scale: int) -> tuple[np.ndarray, np.ndarray]:
  hr = _hr_image(rng, hr_height, hr_width)
  return imresize(hr, 1 / scale), hr


@functools.lru_cache(maxsize=2)
def _train_batches(seed: int, process_index: int, local_batch: int, hr_patch: int, scale: int) -> tuple[dict, ...]:
  rng = np.random.default_rng([seed, process_index, 0])
  batches = []
  for _ in range(TRAIN_BATCHES):
    pairs = [_pair(rng, hr_patch, hr_patch, scale) for _ in range(local_batch)]
    batch = {'lr': np.stack([lr for lr, _ in pairs]).astype(np.float32) / 255.0,
             'hr': np.stack([hr for _, hr in pairs]).astype(np.float32) / 255.0}
    for array in batch.values():
      array.flags.writeable = False  # Cycled batches are shared objects: nothing may change them.
    batches.append(batch)
  return tuple(batches)


def train_iterator(config, info: metadata.SRInfo, start_step: int = 0, *, process_index: int | None = None,
                   process_count: int | None = None) -> Iterator[epochs.Batch]:
  """Infinite per-process batches {'lr': float32 (B, lp, lp, 3), 'hr': float32 (B, hp, hp, 3)} in [0, 1].

  Batch k is batch start_step + k of a run started at step 0, whatever the start.
  """
  process_index, process_count = epochs.process_index_count(process_index, process_count)
  steps_per_epoch(info, config, process_count=process_count)  # A batch larger than the epoch fails here.
  batches = _train_batches(config.seed, process_index, config.batch_size // process_count, info.hr_patch,
                           info.scale)
  return epochs.cycled(batches, start_step)


def eval_images(config, split: str | None = None, *, max_images: int = -1, process_index: int | None = None,
                process_count: int | None = None) -> Iterator[dict]:
  """This process's share {'lr': uint8, 'hr': uint8, 'name', 'index'} of the evaluation images, as the TFDS one.

  Image i has the size EVAL_HR_SIZES[i mod 3] and is a function of (config.seed, i) only, so every process
  count scores the same images; process p gets the images i with i mod process_count == p.
  """
  if split not in (None, config.eval_split):
    raise UserError(f'synthetic data has one evaluation split (config.eval_split={config.eval_split!r}), '
                    f'not {split!r}')
  _check(config)
  process_index, process_count = epochs.process_index_count(process_index, process_count)
  count = config.synthetic.eval_images if max_images < 0 else min(max_images, config.synthetic.eval_images)
  for index in range(process_index, count, process_count):
    height, width = EVAL_HR_SIZES[index % len(EVAL_HR_SIZES)]
    lr, hr = _pair(np.random.default_rng([config.seed, index, 1]), height, width, config.scale)
    yield {'lr': lr, 'hr': hr, 'name': f'synthetic_{index:02d}', 'index': index}
