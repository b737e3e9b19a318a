"""The handwritten digits that ship inside scikit-learn, as a TFDS dataset that prepares itself offline.

`sklearn.datasets.load_digits()` holds 1,797 real 8x8 scans (UCI optical recognition of handwritten
digits, 16 grey levels). They enter through the same TFDS reading code as CIFAR-100 and ImageNet: the
first time a run asks for them, `SklearnDigits` writes ordinary TFRecord shards into the TFDS
data_dir (about a second, no network), and from then on the dataset is read like any other prepared
one, with the same per-process shares, caching and resumable epochs.

The split is fixed: a stratified 80/20 split with seed 0 (1,437 train, 360 test), so that every
run, every seed and every machine is scored on the same 360 test digits.
"""

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from pfca_jax.data import preprocessing

NAME = 'sklearn_digits'
NUM_CLASSES = 10
LABEL_NAMES = tuple(str(d) for d in range(NUM_CLASSES))
TEST_FRACTION = 0.2
SPLIT_SEED = 0
# Per-channel statistics of the train split's pixels in [0, 1] (grey, so equal in R, G, B), computed
# once from load_digits() with this split: digits are bright strokes on a dark background.
MEAN = (0.3054,) * 3
STD = (0.3760,) * 3


def split_indices() -> dict[str, np.ndarray]:
  """Indices into load_digits() of the train and test splits (stratified by label, seeded)."""
  from sklearn.datasets import load_digits
  from sklearn.model_selection import train_test_split
  labels = load_digits().target
  train, test = train_test_split(np.arange(len(labels)), test_size=TEST_FRACTION, stratify=labels,
                                 random_state=SPLIT_SEED)
  return {'train': np.sort(train), 'test': np.sort(test)}


class SklearnDigits(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """TFDS builder of the scikit-learn digits: 8x8x1 uint8 images (grey level x 255 / 16), labels 0-9."""
  name = NAME
  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Stratified 80/20 split of load_digits() with seed 0.'}

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description='Handwritten digits 0-9, 8x8 pixels, 16 grey levels, shipped with scikit-learn.',
        features=tfds.features.FeaturesDict({
            'image': tfds.features.Image(shape=(8, 8, 1)),
            'label': tfds.features.ClassLabel(names=list(LABEL_NAMES)),
        }),
        supervised_keys=('image', 'label'),
        homepage='https://archive.ics.uci.edu/dataset/80',
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # The data is inside the installed scikit-learn: nothing to download.
    return {split: self._generate_examples(indices) for split, indices in split_indices().items()}

  def _generate_examples(self, indices):
    from sklearn.datasets import load_digits
    digits = load_digits()
    for index in indices:
      image = np.round(digits.images[index] * (255.0 / 16.0)).astype(np.uint8)[:, :, None]
      yield int(index), {'image': image, 'label': int(digits.target[index])}


def _to_network_size(image: tf.Tensor, image_size: int) -> tf.Tensor:
  """Any decoded image (8x8 digits, or a user's photo in prediction) -> grey, resized, 3 equal channels."""
  image = tf.image.rgb_to_grayscale(preprocessing.decode_png(image))
  image = tf.image.resize(tf.cast(image, tf.float32), [image_size, image_size], method='bilinear', antialias=True)
  return tf.image.grayscale_to_rgb(tf.clip_by_value(image, 0.0, 255.0))


def train_preprocess(image: tf.Tensor, seed: tf.Tensor, *, image_size: int, padding: int) -> tf.Tensor:
  """Resize to the network's input, then a random shift of up to `padding` pixels; no flips (a flipped 2 is no digit)."""
  image = _to_network_size(image, image_size)
  image = tf.pad(image, [[padding, padding], [padding, padding], [0, 0]])
  return tf.image.stateless_random_crop(image, [image_size, image_size, 3], seed=seed)


def eval_preprocess(image: tf.Tensor, *, image_size: int) -> tf.Tensor:
  return _to_network_size(image, image_size)
