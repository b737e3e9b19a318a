"""What the trainer knows of a dataset before reading an example, and the epoch length it follows from.

Shared by the TFDS pipelines and the synthetic data (which must give the same steps per epoch for the
same sizes), and free of TensorFlow.
"""

import dataclasses

from pfca_jax.data import epochs
from pfca_jax.errors import UserError

SR_SCALES = (2, 3, 4)


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
  """A classification dataset; `image_shape` is that of the preprocessed images the model sees."""
  num_classes: int
  num_train_examples: int
  num_eval_examples: int
  image_shape: tuple[int, int, int]


@dataclasses.dataclass(frozen=True)
class SRInfo:
  """A super-resolution dataset of (LR, HR) pairs; patch sides are in pixels."""
  num_train_examples: int
  scale: int
  lr_patch: int
  hr_patch: int


def steps_per_epoch(info: DatasetInfo, config, *, process_count: int | None = None) -> int:
  """Global steps in one pass over a classification train split.

  Every process reads num_train // process_count examples in full batches only,
  so all processes run the same number of steps and the remainders are dropped.
  """
  _, process_count = epochs.process_index_count(0, process_count)
  local_batch = epochs.local_batch_size(config.batch_size, process_count, 'batch_size')
  steps = (info.num_train_examples // process_count) // local_batch
  if steps == 0:
    raise UserError(f'The train split ({info.num_train_examples} examples over {process_count} processes) is '
                    f'smaller than one batch (config.batch_size={config.batch_size})')
  return steps


def sr_steps_per_epoch(info: SRInfo, config, *, process_count: int | None = None) -> int:
  """Global steps in one super-resolution epoch: every image of a process's share cropped patches_per_image times.

  An epoch is patches_per_image passes (BasicSR's dataset_enlarge_ratio) so that
  DIV2K's 800 images make more than 50 steps of 16, rather than restarting the
  pipeline (and refilling the shuffle window) every 50 steps.
  """
  _, process_count = epochs.process_index_count(0, process_count)
  local_batch = epochs.local_batch_size(config.batch_size, process_count, 'batch_size')
  steps = (info.num_train_examples // process_count * config.patches_per_image) // local_batch
  if steps == 0:
    raise UserError(f'One epoch ({info.num_train_examples} images x config.patches_per_image='
                    f'{config.patches_per_image} over {process_count} processes) is smaller than one batch '
                    f'(config.batch_size={config.batch_size})')
  return steps


def check_sr_config(config) -> None:
  """The scale and patch fields every super-resolution dataset needs, checked before any data is read."""
  if config.scale not in SR_SCALES:
    raise UserError(f'config.scale={config.scale!r} must be one of {SR_SCALES} (the bicubic DIV2K configs)')
  if config.hr_patch_size <= 0 or config.hr_patch_size % config.scale:
    raise UserError(f'config.hr_patch_size={config.hr_patch_size} must be a positive multiple of '
                    f'config.scale={config.scale}, so the LR patch has a whole number of pixels')
  if config.patches_per_image < 1:
    raise UserError(f'config.patches_per_image={config.patches_per_image} must be at least 1')
