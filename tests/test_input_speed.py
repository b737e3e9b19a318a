"""The input pipelines' speed changes leave every pixel as the definitions give it (experiments/input_pipeline.py)."""

import io

import ml_collections
import numpy as np
import pytest
import skimage.data
import tensorflow as tf
from PIL import Image

from pfca_jax.data import classification, preprocessing

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


def test_imagenet_train_map_output_is_the_window_resized_flipped_and_normalised():
  # The pixels the ImageNet train map hands the model (classification._train_epoch on one stored JPEG),
  # against PIL's decoder and float bilinear resize (torchvision's filter) and NumPy's arithmetic.
  # The window is the map's own draw for example k (random_resized_crop_window, tested on its own in
  # test_data_classification.py); the flip is whichever of the two matches, and both must occur.
  photo = skimage.data.chelsea()  # 300 x 451: every window shrinks to 32, as ImageNet photos do.
  buffer = io.BytesIO()
  Image.fromarray(photo).save(buffer, format='JPEG', quality=95)
  jpeg, n, augment_seed = buffer.getvalue(), 8, np.array([3, 4], np.int64)
  spec = classification.DATASETS['imagenet2012']
  config = ml_collections.ConfigDict({'image_size': 32, 'shuffle_buffer_size': 1})  # Window 1 keeps the order.
  read_from = lambda p: tf.data.Dataset.from_tensor_slices({'image': [jpeg] * n, 'label': np.arange(n)}).skip(p)
  batches = classification._train_epoch(read_from, n, spec, config, decode=False, shuffle_seed=0,
                                        augment_seed=augment_seed, skip_examples=0, local_batch=1)
  decoded = np.asarray(Image.open(io.BytesIO(jpeg)).convert('RGB'), np.float32)
  flips = []
  for k, batch in enumerate(batches.as_numpy_iterator()):
    assert batch['label'].tolist() == [k]
    # Example k's seed, and its crop half, as documented in _train_epoch and imagenet_train.
    seed = tf.random.experimental.stateless_fold_in(tf.constant(augment_seed), tf.constant(k, tf.int64))
    crop_seed = tf.random.experimental.stateless_split(seed, num=2)[0]
    top, left, h, w = preprocessing.random_resized_crop_window(tf.constant(photo.shape[:2]), crop_seed).numpy()
    window = decoded[top:top + h, left:left + w]
    resized = np.stack([np.asarray(Image.fromarray(np.ascontiguousarray(window[..., c]), 'F').resize((32, 32), Image.BILINEAR))
                        for c in range(3)], axis=-1)
    want = (resized / 255.0 - np.array(MEAN)) / np.array(STD)
    errors = [np.abs(batch['image'][0] - candidate).max() for candidate in (want, want[:, ::-1])]
    # Measured: at most 0.0029 (0.17 of a pixel level) from the right flip, over 2 from the other.
    assert min(errors) < 0.5 / 255 / min(STD) and max(errors) > 1, (k, errors)
    flips.append(int(np.argmin(errors)))
  assert len(flips) == n and set(flips) == {0, 1}
