"""Tiny prepared TFDS classification datasets (real shards, real names) and helpers, for the data tests.

Examples carry unique labels so that every batch can be traced back to them.
"""

import json
import os

import ml_collections
import numpy as np
import pytest
import skimage.data
import tensorflow as tf
import tensorflow_datasets as tfds

from pfca_jax.data import fake_data

CIFAR_MEAN, CIFAR_STD = np.array([0.5071, 0.4865, 0.4409]), np.array([0.2673, 0.2564, 0.2762])
IMAGENET_MEAN, IMAGENET_STD = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
NUM_CIFAR_TRAIN, NUM_CIFAR_TEST = 50, 23
# Train files of uneven sizes (TFDS writes even ones): with two processes, share 0 ends and share 1
# starts inside the third file.
UNEVEN_SHARDS = (3, 21, 5, 9, 12)
CHELSEA_LABEL = 999  # The other fake ImageNet labels are drawn below it.


def config(dataset, data_dir, **overrides):
  fields = dict(dataset=dataset, data_dir=str(data_dir), train_split='train', image_size=32, crop_padding=4,
                eval_resize_size=256, shuffle_buffer_size=64, cache_train=False, seed=0, batch_size=8,
                eval_batch_size=6)
  fields.update({'cifar100': dict(eval_split='test'),
                 'imagenet2012': dict(eval_split='validation', image_size=24, eval_resize_size=28)}[dataset])
  fields.update(overrides)
  return ml_collections.ConfigDict(fields)


@pytest.fixture(scope='module')
def cifar_images():
  rng = np.random.default_rng(0)
  return {split: rng.integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8)
          for split, n in [('train', NUM_CIFAR_TRAIN), ('test', NUM_CIFAR_TEST)]}


def write_labelled_cifar(tmp_path_factory, cifar_images, num_shards: int) -> str:
  """A prepared cifar100 whose label i is the i-th image of its split, so labels identify examples."""
  data_dir = str(tmp_path_factory.mktemp('tfds'))
  fake_data.write_fake_dataset('cifar100', data_dir, {
      split: [(image, label) for label, image in enumerate(images)] for split, images in cifar_images.items()},
      num_shards=num_shards)
  return data_dir


@pytest.fixture(scope='module')
def cifar_dir(tmp_path_factory, cifar_images):
  return write_labelled_cifar(tmp_path_factory, cifar_images, num_shards=3)


@pytest.fixture(scope='module')
def imagenet_dir(tmp_path_factory):
  data_dir = str(tmp_path_factory.mktemp('tfds'))
  fake_data.write_fake_dataset('imagenet2012', data_dir, {
      'train': fake_data.fake_examples('imagenet2012', 20, num_classes=CHELSEA_LABEL),
      'validation': [(skimage.data.chelsea(), CHELSEA_LABEL)] + fake_data.fake_examples(
          'imagenet2012', 6, seed=1, num_classes=CHELSEA_LABEL)})
  return data_dir


def reshard(data_dir, name, split, lengths):
  """Rewrites the record files of a prepared split as files of `lengths` records, with metadata to match."""
  builder = tfds.builder(name, data_dir=data_dir)
  old = [str(p) for p in builder.info.splits[split].filepaths]
  records = list(tf.data.TFRecordDataset(old).as_numpy_iterator())
  assert sum(lengths) == len(records)
  for path in old:
    os.remove(path)
  folder, start = str(builder.data_dir), 0
  for i, length in enumerate(lengths):
    with tf.io.TFRecordWriter(f'{folder}/{name}-{split}.tfrecord-{i:05d}-of-{len(lengths):05d}') as writer:
      for record in records[start:start + length]:
        writer.write(record)
    start += length
  with open(f'{folder}/dataset_info.json') as f:
    metadata = json.load(f)
  for split_info in metadata['splits']:
    if split_info['name'] == split:
      split_info['shardLengths'] = [str(n) for n in lengths]
  with open(f'{folder}/dataset_info.json', 'w') as f:
    json.dump(metadata, f)


@pytest.fixture(scope='module')
def uneven_dir(tmp_path_factory, cifar_images):
  """The CIFAR fixture's data (label i: the i-th image) with its train split in files of UNEVEN_SHARDS records."""
  data_dir = write_labelled_cifar(tmp_path_factory, cifar_images, num_shards=1)
  reshard(data_dir, 'cifar100', 'train', UNEVEN_SHARDS)
  return data_dir


def file_labels(data_dir, split):
  """Labels of each file instruction of `split`, in its order, parsed here (not by the pipeline)."""
  builder = tfds.builder('cifar100', data_dir=data_dir)
  labels = []
  for f in builder.info.splits[split].file_instructions:
    records = list(tf.data.TFRecordDataset(str(f.filename)).as_numpy_iterator())[f.skip:f.skip + f.take]
    labels.append([int(builder.info.features.deserialize_example(r)['label']) for r in records])
  return labels


def corrupt(path):
  """Same size (the start-up check looks at sizes), but no record in it can be read."""
  size = os.path.getsize(path)
  with open(path, 'wb') as f:
    f.write(np.random.default_rng(0).integers(0, 256, size, dtype=np.uint8).tobytes())


def assert_batches_equal(got, want, what):
  assert len(got) == len(want), what
  for step, (a, b) in enumerate(zip(got, want)):
    assert np.array_equal(a['label'], b['label']), (what, step)
    assert np.array_equal(a['image'], b['image']), (what, step)


def take(iterator, n):
  return [next(iterator) for _ in range(n)]


def labels_of(batches):
  return np.concatenate([b['label'] for b in batches]).tolist()


def normalised_range(mean, std):
  return (0 - mean) / std, (1 - mean) / std
