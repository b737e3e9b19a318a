"""What every training pipeline shares: per-process sizes, seeds per epoch, and resumable epochs.

A pipeline is resumable bit for bit when each epoch is a pure function of (seed, epoch, process) and
the position inside it: `resumable_epochs` restarts at the epoch of `start_step` and hands the
epoch builder the number of examples to skip (before decoding) to reach it.
"""

import itertools
import math
from typing import Callable, Iterator

import jax
import numpy as np

from pfca_jax.errors import UserError

Batch = dict[str, np.ndarray]


def local_batch_size(global_batch_size: int, process_count: int, name: str) -> int:
  if global_batch_size <= 0 or global_batch_size % process_count:
    raise UserError(f'config.{name}={global_batch_size} must be a positive multiple of the process count '
                     f'({process_count})')
  return global_batch_size // process_count


def largest_share(num: int, process_count: int) -> int:
  """Size of the largest share of `num` examples split without drop (the first one's)."""
  return math.ceil(num / process_count)


def process_index_count(process_index: int | None, process_count: int | None) -> tuple[int, int]:
  return (jax.process_index() if process_index is None else process_index,
          jax.process_count() if process_count is None else process_count)


def read_options():
  """The tf.data options of every TFDS pipeline (synthetic data needs no TensorFlow, so it is imported here)."""
  import tensorflow as tf  # Already imported, silenced and kept off the GPUs by the pipeline's module.
  options = tf.data.Options()
  options.deterministic = True
  # One thread per op is better for a pipeline that runs many ops side by side.
  options.threading.max_intra_op_parallelism = 1
  return options


def epoch_seeds(seed: int, epoch: int, process_index: int) -> tuple[int, int, np.ndarray]:
  """Independent (file order, shuffle windows, augmentation) seeds of one epoch on one process."""
  words = np.random.SeedSequence([seed % 2**64, epoch, process_index]).generate_state(3, np.uint64)
  # TF takes signed int64 seeds: drop one bit rather than wrap to negative values.
  files, shuffle = int(words[0] >> 1), int(words[1] >> 1)
  augment = np.array([words[2] >> 32, words[2] & 0xFFFFFFFF], np.int64)
  return files, shuffle, augment


def exactly(batches: Iterator[Batch], count: int, what: str) -> Iterator[Batch]:
  """`batches`, failing if there are not `count` of them (data that does not match its metadata)."""
  produced = 0
  for batch in batches:
    produced += 1
    if produced > count:
      break
    yield batch
  if produced != count:
    raise RuntimeError(f'{what} has {"more" if produced > count else produced} batches instead of {count}: '
                       'the data does not match its metadata')


def cycled(batches, start_step: int) -> Iterator[Batch]:
  """batches[s % len(batches)] for s = start_step, start_step + 1, ...: generated data, resumable at any step."""
  if start_step < 0:
    raise ValueError(f'start_step must be >= 0, got {start_step}')
  for step in itertools.count(start_step):
    yield batches[step % len(batches)]


def resumable_epochs(build_epoch: Callable[..., object], *, seed: int, process_index: int,
                     start_step: int, steps_per_epoch: int, local_batch: int, what: str) -> Iterator[Batch]:
  """Batches of epochs start_step // steps_per_epoch, ... from `build_epoch`, exactly steps_per_epoch each.

  build_epoch(files_seed=, shuffle_seed=, augment_seed=, skip_examples=) returns one epoch's batches (a
  tf.data.Dataset) from example `skip_examples` on; only the first epoch skips.
  """
  if start_step < 0:
    raise ValueError(f'start_step must be >= 0, got {start_step}')
  first_epoch, skip_batches = divmod(start_step, steps_per_epoch)
  for epoch in itertools.count(first_epoch):
    files_seed, shuffle_seed, augment_seed = epoch_seeds(seed, epoch, process_index)
    ds = build_epoch(files_seed=files_seed, shuffle_seed=shuffle_seed, augment_seed=augment_seed,
                     skip_examples=skip_batches * local_batch)
    yield from exactly(ds.as_numpy_iterator(), steps_per_epoch - skip_batches, f'{what} epoch {epoch}')
    skip_batches = 0
