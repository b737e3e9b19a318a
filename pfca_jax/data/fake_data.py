"""Tiny prepared TFDS datasets under the real names, for tests and smoke runs without the data.

`tfds.testing.mock_data` cannot stand in for a prepared dataset here: under it a
builder reports no split sizes and is not "prepared", and every split or
sub-split (`train[0:10]`, even_splits shares) yields the same examples, so the
per-process shares, epoch lengths and eval padding would go untested or wrong.
These helpers instead write real TFRecord shards and metadata with TFDS's own
writer, through the registered builder of the dataset with only its example
generation replaced, so reading goes through exactly the code path of the real
data: `write_fake_dataset('cifar100', tmp, {...})` then
`tfds.builder('cifar100', data_dir=tmp)` reads them.
"""

from typing import Mapping, Sequence

import numpy as np
import tensorflow_datasets as tfds

Example = tuple[np.ndarray, int]  # (uint8 HxWx3 image, label)


def fake_examples(name: str, num: int, *, seed: int = 0, num_classes: int | None = None) -> list[Example]:
  """Random images shaped like the dataset's: 32x32 for CIFAR, random sizes (18-80 px a side) otherwise."""
  rng = np.random.default_rng(seed)
  num_classes = num_classes or tfds.builder_cls(name)().info.features['label'].num_classes
  examples = []
  for _ in range(num):
    height, width = (32, 32) if name.startswith('cifar') else rng.integers(18, 81, size=2)
    image = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    examples.append((image, int(rng.integers(num_classes))))
  return examples


def write_fake_dataset(name: str, data_dir: str, splits: Mapping[str, Sequence[Example]], *,
                       num_shards: int = 2) -> None:
  """Prepares TFDS dataset `name` in `data_dir` with the given examples.

  Features other than 'image' and 'label' (CIFAR's id and coarse label,
  ImageNet's file name) get placeholder values. TFDS orders the examples of a
  split by a hash of their keys (the examples' indices), as it does real data.
  With `num_shards` > 1 file-order shuffling has something to shuffle.
  """
  dataset_name = name

  class FakeBuilder(tfds.builder_cls(name), skip_registration=True):
    name = dataset_name

    def _split_generators(self, dl_manager):
      del dl_manager  # Nothing to download.
      return {split: self._examples(examples) for split, examples in splits.items()}

    def _examples(self, examples):
      for index, (image, label) in enumerate(examples):
        yield index, _fill_features(self.info.features, index, image, label)

  FakeBuilder(data_dir=data_dir).download_and_prepare(
      download_config=tfds.download.DownloadConfig(num_shards=num_shards))


def write_fake_div2k(data_dir: str, scale: int, splits: Mapping[str, Sequence[tuple[np.ndarray, np.ndarray]]], *,
                     num_shards: int = 2) -> None:
  """Prepares TFDS `div2k/bicubic_x{scale}` in `data_dir` with {split: [(lr uint8, hr uint8), ...]}."""

  class FakeDiv2k(tfds.builder_cls('div2k'), skip_registration=True):
    name = 'div2k'

    def _split_generators(self, dl_manager):
      del dl_manager  # Nothing to download.
      return {split: self._examples(pairs) for split, pairs in splits.items()}

    def _examples(self, pairs):
      for index, (lr, hr) in enumerate(pairs):
        yield index, {'lr': lr, 'hr': hr}

  FakeDiv2k(config=f'bicubic_x{scale}', data_dir=data_dir).download_and_prepare(
      download_config=tfds.download.DownloadConfig(num_shards=num_shards))


def _fill_features(features, index: int, image: np.ndarray, label: int) -> dict:
  example = {}
  for key, feature in features.items():
    if key == 'image':
      example[key] = image
    elif key == 'label':
      example[key] = label
    elif isinstance(feature, tfds.features.Text):
      example[key] = f'fake_{index}'
    elif isinstance(feature, tfds.features.ClassLabel):
      example[key] = 0
    else:
      raise ValueError(f'No placeholder for feature {key!r} ({type(feature).__name__})')
  return example
