"""Resuming the classification training pipeline: bit-identical batches, and a start-up that reads at most one
file and one shuffle window wherever the run stopped (pfca_jax/data/file_order.py)."""

import os
import shutil

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from classification_data import (  # noqa: F401 -- fixtures are used by name.
    NUM_CIFAR_TRAIN, UNEVEN_SHARDS, assert_batches_equal, cifar_dir, cifar_images, config, corrupt, file_labels,
    imagenet_dir, labels_of, take, uneven_dir)
from pfca_jax.data import classification as data
from pfca_jax.data import epochs, tfds_source


def test_exact_resume_of_the_imagenet_pipeline_mid_epoch_and_at_epoch_boundaries(imagenet_dir):
  # Its random-resized crops and flips are drawn per step: a resume must draw the same ones. (The CIFAR
  # pipeline is resumed at every step below, with and without the cache.)
  cfg = config('imagenet2012', imagenet_dir, batch_size=4)
  info = data.dataset_info(cfg)
  spe = data.steps_per_epoch(info, cfg)
  total = 2 * spe + 3
  reference = take(data.train_iterator(cfg, info), total)
  for start in (3, spe, spe + 1, 2 * spe + 2):
    assert_batches_equal(take(data.train_iterator(cfg, info, start_step=start), total - start), reference[start:],
                         f'start {start}')


def test_resume_is_not_vacuous(cifar_dir):
  # Batches of different steps differ, so the resume test compares something.
  cfg = config('cifar100', cifar_dir)
  info = data.dataset_info(cfg)
  a, b = take(data.train_iterator(cfg, info), 2)
  assert not np.array_equal(a['label'], b['label'])
  assert not np.array_equal(next(data.train_iterator(cfg, info, start_step=1))['label'], a['label'])


@pytest.mark.parametrize('cache_train', [False, True])
def test_epoch_is_files_in_seeded_order_then_shuffled_windows(uneven_dir, cache_train):
  # The order the docs describe, checked against the files read here: window w of the epoch holds
  # examples w*W .. (w+1)*W - 1 of the files read in turn (in the epoch's seeded order; in their own
  # order with the cache), shuffled; the last window is short.
  cfg = config('cifar100', uneven_dir, shuffle_buffer_size=16, batch_size=2, cache_train=cache_train)
  info = data.dataset_info(cfg)
  spe = data.steps_per_epoch(info, cfg)
  assert spe * 2 == NUM_CIFAR_TRAIN
  files = file_labels(uneven_dir, 'train')
  assert [len(f) for f in files] == list(UNEVEN_SHARDS)
  batches = take(data.train_iterator(cfg, info), 2 * spe)
  file_orders = []
  for epoch in range(2):
    got = labels_of(batches[epoch * spe:(epoch + 1) * spe])
    files_seed, _, _ = epochs.epoch_seeds(cfg.seed, epoch, 0)
    order = list(range(len(files))) if cache_train else np.random.default_rng(files_seed).permutation(len(files))
    file_orders.append(list(order))
    sequence = [label for i in order for label in files[i]]
    for start in range(0, NUM_CIFAR_TRAIN, 16):
      assert sorted(got[start:start + 16]) == sorted(sequence[start:start + 16]), (epoch, start)
    assert got != sequence
  assert cache_train or file_orders[0] != file_orders[1]
  assert labels_of(batches[:spe]) != labels_of(batches[spe:])


@pytest.mark.parametrize('process_count', [1, 2, 3])
def test_every_example_of_a_share_once_per_epoch_with_uneven_files(uneven_dir, process_count):
  cfg = config('cifar100', uneven_dir, shuffle_buffer_size=8, batch_size=process_count)
  info = data.dataset_info(cfg)
  spe = data.steps_per_epoch(info, cfg, process_count=process_count)
  builder = tfds.builder('cifar100', data_dir=uneven_dir)
  seen = set()
  for p in range(process_count):
    share = tfds_source.process_share('train', p, process_count, drop_remainder=True)
    want = sorted(int(ex['label']) for ex in builder.as_dataset(split=share).as_numpy_iterator())
    assert len(want) == spe == NUM_CIFAR_TRAIN // process_count
    batches = take(data.train_iterator(cfg, info, process_index=p, process_count=process_count), 2 * spe)
    for epoch in range(2):
      assert sorted(labels_of(batches[epoch * spe:(epoch + 1) * spe])) == want, (p, epoch)
    assert not seen & set(want)
    seen |= set(want)


@pytest.mark.parametrize('cache_train', [False, True])
@pytest.mark.parametrize('process_index, process_count', [(0, 1), (1, 2)])
def test_resume_at_every_step_is_bit_identical(uneven_dir, cache_train, process_index, process_count):
  # Windows of 8 over files of 3, 21, 5, 9, 12 examples (share 1 of 2: 4, 9, 12): resume points
  # in every window and file, at file boundaries, inside the short last window and at epoch ends.
  cfg = config('cifar100', uneven_dir, shuffle_buffer_size=8, batch_size=2 * process_count, cache_train=cache_train)
  info = data.dataset_info(cfg)
  spe = data.steps_per_epoch(info, cfg, process_count=process_count)
  iterator = lambda start: data.train_iterator(cfg, info, start, process_index=process_index,
                                               process_count=process_count)
  reference = take(iterator(0), 2 * spe + 2)
  for start in [*range(spe + 2), 2 * spe - 1, 2 * spe]:
    count = len(reference) - start if start in (spe // 2, spe - 1) else min(3, len(reference) - start)
    assert_batches_equal(take(iterator(start), count), reference[start:start + count], f'start {start}')


@pytest.mark.parametrize('cache_train', [False, True])
def test_resume_near_the_end_of_an_epoch_does_not_read_the_files_before_its_window(tmp_path, uneven_dir, cache_train):
  data_dir = shutil.copytree(uneven_dir, tmp_path / 'tfds')
  cfg = config('cifar100', data_dir, shuffle_buffer_size=8, batch_size=2, cache_train=cache_train)
  info = data.dataset_info(cfg)
  spe = data.steps_per_epoch(info, cfg)
  start = spe - 2  # Example 46, in the window of examples 40-47.
  reference = take(data.train_iterator(cfg, info), spe)[start:]
  files = tfds.builder('cifar100', data_dir=str(data_dir)).info.splits['train'].file_instructions
  files_seed, _, _ = epochs.epoch_seeds(cfg.seed, 0, 0)
  order = range(len(files)) if cache_train else np.random.default_rng(files_seed).permutation(len(files))
  end, skipped = 0, []
  for i in order:
    end += files[i].take
    if end <= 40:
      skipped.append(str(files[i].filename))
  assert len(skipped) >= 2
  for path in skipped:
    corrupt(path)
  assert_batches_equal(take(data.train_iterator(cfg, info, start_step=start), 2), reference, 'resumed')
  with pytest.raises(tf.errors.DataLossError):  # The corruption is seen by whatever reads those files.
    take(data.train_iterator(cfg, info), 1)


def test_cache_is_filled_by_the_epoch_after_a_resumed_one(tmp_path, uneven_dir):
  data_dir = shutil.copytree(uneven_dir, tmp_path / 'tfds')
  cfg = config('cifar100', data_dir, shuffle_buffer_size=8, batch_size=2, cache_train=True)
  info = data.dataset_info(cfg)
  spe = data.steps_per_epoch(info, cfg)
  reference = take(data.train_iterator(cfg, info), 3 * spe)
  start = spe // 2
  iterator = data.train_iterator(cfg, info, start_step=start)
  got = take(iterator, 2 * spe - start + 1)  # The rest of epoch 0 from the files, epoch 1, the first of epoch 2.
  for path in tfds.builder('cifar100', data_dir=str(data_dir)).info.splits['train'].filepaths:
    os.remove(path)
  got += take(iterator, spe - 1)  # Epoch 2 from the cache alone.
  assert_batches_equal(got, reference[start:], 'resumed with the cache')
