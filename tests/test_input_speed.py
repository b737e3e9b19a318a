"""The input pipelines' speed changes leave every pixel as the definitions give it (experiments/input_pipeline.py)."""

import numpy as np
import pytest
import tensorflow as tf

from pfca_jax.data import preprocessing

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def normalize_definition(image, mean, std):
  """(x / 255 - mean) / std with mean and std as (3,) vectors: the formula as written before the speed-up."""
  return (tf.cast(image, tf.float32) / 255.0 - tf.constant(mean, tf.float32)) / tf.constant(std, tf.float32)


@pytest.mark.parametrize('shape', [(224, 224, 3), (7, 5, 3), (2, 9, 4, 3)])
@pytest.mark.parametrize('dtype', [tf.float32, tf.uint8])
def test_normalize_is_bit_identical_to_its_definition(shape, dtype):
  rng = np.random.default_rng(0)
  pixels = rng.uniform(0, 255, size=shape).astype(np.float32)
  pixels.reshape(-1, 3)[:2] = [[0, 255, 127.5], [255, 0, 1]]  # The ends of the range, and a half.
  image = tf.constant(pixels.round() if dtype == tf.uint8 else pixels, dtype)
  fast = preprocessing.normalize(image, MEAN, STD).numpy()
  np.testing.assert_array_equal(fast, normalize_definition(image, MEAN, STD).numpy())
  assert fast.dtype == np.float32 and fast.shape == shape


def test_normalize_uses_each_channels_statistics():
  # Against hand-computed values too, so that the test does not only compare the code with itself.
  image = tf.fill([4, 6, 3], 255.0)
  out = preprocessing.normalize(image, MEAN, STD).numpy()
  np.testing.assert_allclose(out[0, 0], [(1 - m) / s for m, s in zip(MEAN, STD)], rtol=1e-6)
  assert np.all(out == out[:1, :1])


def test_normalize_in_tf_data_is_bit_identical_to_numpy():
  # Where the pipelines run it: a tf.data map, here of images whose shape is unknown until run time.
  # (Under tf.function, outside tf.data, Grappler rewrites the arithmetic of both forms alike and
  # neither equals NumPy to the bit.)
  images = tf.data.Dataset.range(3).map(
      lambda i: tf.random.stateless_uniform(tf.stack([5 + i, 8, 3]), seed=tf.stack([i, 2]), maxval=255.0))
  for image, out in zip(images, images.map(lambda x: preprocessing.normalize(x, MEAN, STD))):
    expected = (image.numpy() / np.float32(255) - np.float32(MEAN)) / np.float32(STD)
    np.testing.assert_array_equal(out.numpy(), expected)


def test_imagenet_train_map_output_unchanged():
  # The train map's last two steps as classification._train_epoch runs them, against the definition.
  jpeg = tf.io.encode_jpeg(tf.cast(tf.random.stateless_uniform([96, 128, 3], seed=[3, 4], maxval=256,
                                                               dtype=tf.int32), tf.uint8), quality=90)
  image = preprocessing.imagenet_train(jpeg, tf.constant([5, 6], tf.int64), image_size=32)
  np.testing.assert_array_equal(preprocessing.normalize(image, MEAN, STD).numpy(),
                                normalize_definition(image, MEAN, STD).numpy())
