"""A resumable order for one epoch of a TFDS split: whole files in a seeded order, then seeded windows.

tf.data's shuffle buffer cannot be resumed: its k-th output depends on every input before it, so
resuming at example k means replaying the epoch's records up to k (for ImageNet, up to an epoch of
files on every preemption). The order here is made of parts whose positions follow from the
metadata's record counts alone:

  1. the split's file instructions (file, skip, take: a process share may start or end inside a
     file) in an order drawn from the epoch's files seed, read one file after the other;
  2. that sequence cut into windows of W consecutive examples, each shuffled in full with a seed of
     its own (the epoch's shuffle seed and the window's index).

Example k of the epoch is in window k // W, whose first example is at a known place in the
sequence. Resuming there skips every file before it by its record count (never opened), reads the
rest of the file that window starts in, fills one window and drops that window's first k % W
outputs: at most one file and one window, wherever k is.

Mixing: a window is a uniform permutation of W consecutive examples, which tf.data's buffer of W
only approximates; as with that buffer, examples further apart than about a window in the read order
do not meet in a batch. Files are read one after the other, not interleaved, so a window holds
W / (records per file) whole files; the file order, drawn anew every epoch, varies which files meet.
"""

import dataclasses
from typing import Callable, Sequence

import numpy as np

from pfca_jax.data import tfds_source

tf = tfds_source.tf
tfds = tfds_source.tfds


def file_instructions(builder, split) -> list | None:
  """The files that hold `split` (e.g. a process share), in TFDS's order; None under mock_data (no files)."""
  if tfds_source.mock_data_active():
    return None
  return list(builder.info.splits[split].file_instructions)


def ordered(instructions: Sequence, files_seed: int | None) -> list:
  """The instructions in the order of `files_seed` (a numpy permutation), or as they are for None."""
  if files_seed is None:
    return list(instructions)
  return [instructions[i] for i in np.random.default_rng(files_seed).permutation(len(instructions))]


def starting_at(instructions: Sequence, position: int) -> list:
  """The instructions that read their sequence from example `position` on.

  Files that end before `position` are left out by their record counts (`take`); the one that holds
  it keeps its own records from there, which TFDS skips before parsing them.
  """
  if position < 0:
    raise ValueError(f'position must be >= 0, got {position}')
  for i, instruction in enumerate(instructions):
    if position < instruction.take:
      first = dataclasses.replace(instruction, skip=instruction.skip + position, take=instruction.take - position)
      return [first, *instructions[i + 1:]]
    position -= instruction.take
  raise ValueError(f'position is past the {sum(f.take for f in instructions)} examples of the files')


def read_in_order(builder, split, instructions: Sequence | None, *, decoders, options,
                  position: int = 0) -> tf.data.Dataset:
  """The examples of `split` as `instructions` order them (one file at a time), from `position` on.

  TFDS reads the files it is given through `experimental_interleave_sort_fn`, so parsing and
  decoders are its own; with a cycle length of 1 the files follow one another. Under mock_data
  (instructions None) the mocked split is read whole and `position` examples are skipped.
  """
  if instructions is None:
    return builder.as_dataset(split=split, shuffle_files=False, decoders=decoders,
                              read_config=tfds.ReadConfig(try_autocache=False, options=options)).skip(position)
  files = starting_at(instructions, position)
  read_config = tfds.ReadConfig(try_autocache=False, options=options, interleave_cycle_length=1,
                                experimental_interleave_sort_fn=lambda _: files)
  return builder.as_dataset(split=split, shuffle_files=False, decoders=decoders, read_config=read_config)


def window_seeds(shuffle_seed: int, num_windows: int) -> np.ndarray:
  """One independent int64 seed per window of an epoch."""
  words = np.random.SeedSequence([shuffle_seed % 2**64]).generate_state(num_windows, np.uint64)
  return (words >> 1).astype(np.int64)  # TF takes signed int64 seeds.


def windowed_shuffle(read_from: Callable[[int], tf.data.Dataset], *, num_examples: int, window: int,
                     shuffle_seed: int, start: int = 0, read_ahead: bool = True) -> tf.data.Dataset:
  """(k, example) for k = start, start + 1, ...: the epoch's sequence with each window of `window` shuffled.

  read_from(p) returns the sequence from its example p on; it is called once, with p the first
  example of the window that holds `start`. With `read_ahead` the next window is read while one is
  consumed (up to two windows in memory); without it the pipeline waits for each window to be read
  (one window in memory, as tf.data's buffer held).
  """
  if window <= 0:
    raise ValueError(f'the shuffle window must be positive, got {window}')
  if not 0 <= start < num_examples:
    raise ValueError(f'start={start} is not in [0, {num_examples})')
  first_window = start // window
  seeds = tf.constant(window_seeds(shuffle_seed, -(-num_examples // window)))

  def shuffled(index, examples):
    # A buffer as large as the window shuffles it uniformly; its seed is the window's only.
    seed = tf.gather(seeds, tf.minimum(index, seeds.shape[0] - 1))
    return tf.data.Dataset.zip(examples).shuffle(window, seed=seed, reshuffle_each_iteration=False)

  # window() collects a window's examples before handing it on; prefetch collects the next meanwhile.
  windows = read_from(first_window * window).window(window)
  windows = windows.prefetch(1) if read_ahead else windows
  # Unbounded, so that zip ends on the sequence's end: a cache (config.cache_train) is kept only
  # when its reader reaches the end.
  indices = tf.data.Dataset.range(first_window, 2**62)
  ds = tf.data.Dataset.zip((indices, windows)).flat_map(shuffled)
  return ds.skip(start - first_window * window).enumerate(start)
