"""Synthetic classification data (`config.dataset='synthetic'`): generated batches, no files, no TensorFlow.

For measuring the whole trainer and checking a machine, not for results. The batches have the shapes,
dtypes, per-process sizes and epoch length of a real pipeline's: images of config.image_size (CIFAR-
or ImageNet-shaped), labels among config.synthetic.num_classes, config.synthetic.train_examples per
epoch and config.synthetic.eval_examples evaluated with the real evaluation's padding and mask.

Speed: each process generates `TRAIN_BATCHES` distinct batches once, on the host, and cycles through
them (batch of step s = batch s mod TRAIN_BATCHES), so producing a batch costs nothing and the data
can never be what a run waits on; what remains is the host-to-device copy every real pipeline has too.
That makes every batch a function of (seed, process, step): a resumed run gets bit-identical batches.

Learnable on purpose: an image is unit Gaussian noise plus its class's colour (one random RGB offset
per class), so a working trainer lowers the loss and lifts accuracy above chance within a few hundred
steps, on the training batches and on the evaluation examples (drawn from the same classes).
"""

import functools
from typing import Iterator

import numpy as np

from pfca_jax.data import epochs, metadata
from pfca_jax.errors import UserError

TRAIN_BATCHES = 4  # Distinct batches per process; more would only cost host memory (ImageNet: 154 MB each).
EVAL_BATCHES = 2   # Distinct evaluation batches, cycled over the evaluation's steps.
CLASS_COLOUR_STD = 0.5  # Of the per-class colour offsets, against noise of std 1: separable, not trivially.

# Said on the console when a run starts: these numbers measure the machine, not the attention.
DESCRIPTION = (f'data: synthetic ({TRAIN_BATCHES} generated batches cycled, no files read): for measuring the trainer '
               'and checking a machine, not for results')

steps_per_epoch = metadata.steps_per_epoch


def _check(config) -> None:
  sizes = config.synthetic
  for field, value in (('image_size', config.image_size), ('synthetic.num_classes', sizes.num_classes),
                       ('synthetic.train_examples', sizes.train_examples),
                       ('synthetic.eval_examples', sizes.eval_examples)):
    if not isinstance(value, int) or value < 1:
      raise UserError(f'config.{field}={value!r} must be a positive integer (dataset {config.dataset!r})')


def dataset_info(config) -> metadata.DatasetInfo:
  """The sizes the config asks for; nothing is generated yet."""
  _check(config)
  return metadata.DatasetInfo(num_classes=config.synthetic.num_classes,
                              num_train_examples=config.synthetic.train_examples,
                              num_eval_examples=config.synthetic.eval_examples,
                              image_shape=(config.image_size, config.image_size, 3))


def _class_colours(seed: int, num_classes: int) -> np.ndarray:
  """(num_classes, 3) float32 offsets, the same on every process and in training and evaluation."""
  return (np.random.default_rng([seed, 0]).standard_normal((num_classes, 3)) * CLASS_COLOUR_STD).astype(np.float32)


def _batch(rng: np.random.Generator, colours: np.ndarray, size: int, image_size: int) -> dict:
  labels = rng.integers(0, len(colours), size, dtype=np.int32)
  images = rng.standard_normal((size, image_size, image_size, 3), dtype=np.float32)
  images += colours[labels][:, None, None, :]
  for array in (images, labels):
    array.flags.writeable = False  # Cycled batches are shared objects: nothing may change them.
  return {'image': images, 'label': labels}


@functools.lru_cache(maxsize=4)
def _batches(seed: int, process_index: int, which: int, count: int, size: int, image_size: int,
             num_classes: int) -> tuple[dict, ...]:
  """`count` batches of `size`, a pure function of the arguments (kept: evaluation reuses them)."""
  rng = np.random.default_rng([seed, process_index, which])
  colours = _class_colours(seed, num_classes)
  return tuple(_batch(rng, colours, size, image_size) for _ in range(count))


def train_iterator(config, info: metadata.DatasetInfo, start_step: int = 0, *, process_index: int | None = None,
                   process_count: int | None = None) -> Iterator[epochs.Batch]:
  """Infinite per-process batches {'image': float32 (B, S, S, 3), 'label': int32 (B,)}, B = batch_size // processes.

  Batch k is batch start_step + k of a run started at step 0, whatever the start.
  """
  process_index, process_count = epochs.process_index_count(process_index, process_count)
  steps_per_epoch(info, config, process_count=process_count)  # A batch larger than the epoch fails here.
  local_batch = config.batch_size // process_count
  batches = _batches(config.seed, process_index, 0, TRAIN_BATCHES, local_batch, info.image_shape[0],
                     info.num_classes)
  return epochs.cycled(batches, start_step)


def eval_iterator(config, info: metadata.DatasetInfo, split: str | None = None, *,
                  process_index: int | None = None,
                  process_count: int | None = None) -> tuple[Iterator[epochs.Batch], int]:
  """(iterator, num_steps) of padded, masked batches {'image', 'label', 'mask': bool (B,)}, as the TFDS one.

  The eval_examples are shared without drop (the first N % process_count processes get one more), each
  share padded to num_steps * B with mask-False examples, num_steps the same on every process.
  """
  if split not in (None, config.eval_split):
    raise UserError(f'synthetic data has one evaluation split (config.eval_split={config.eval_split!r}), '
                    f'not {split!r}')
  process_index, process_count = epochs.process_index_count(process_index, process_count)
  local_batch = epochs.local_batch_size(config.eval_batch_size, process_count, 'eval_batch_size')
  total = info.num_eval_examples
  share = total // process_count + (process_index < total % process_count)
  num_steps = -(-epochs.largest_share(total, process_count) // local_batch)
  pool = _batches(config.seed, process_index, 1, EVAL_BATCHES, local_batch, info.image_shape[0],
                  info.num_classes)

  def batches():
    for step in range(num_steps):
      real = np.clip(share - step * local_batch, 0, local_batch)
      yield dict(pool[step % EVAL_BATCHES], mask=np.arange(local_batch) < real)

  return batches(), num_steps
