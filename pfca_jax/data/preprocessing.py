"""Image preprocessing of the classification recipes (docs/training.md, "Recipes").

Every random op is stateless and takes its seed as an argument, so an example's
augmentation depends only on the seed the pipeline derives for it, never on how
many threads ran or in which order: that is what makes resuming exact.

Functions take an image either still encoded (a scalar tf.string, the cheap
form to shuffle and skip) or decoded (uint8 HxWx3, the form kept in a cache),
and return float32 images in [0, 255]; normalisation is the last, separate step.
"""

import math

import tensorflow as tf

# torchvision's RandomResizedCrop defaults, which the ImageNet recipe uses.
CROP_AREA_RANGE = (0.08, 1.0)
CROP_ASPECT_RANGE = (3 / 4, 4 / 3)
CROP_ATTEMPTS = 10


def _is_encoded(image: tf.Tensor) -> bool:
  return image.dtype == tf.string


def decode_png(image: tf.Tensor) -> tf.Tensor:
  return tf.io.decode_png(image, channels=3) if _is_encoded(image) else image


def decode_jpeg(image: tf.Tensor) -> tf.Tensor:
  # INTEGER_ACCURATE is libjpeg's islow IDCT, the one PIL uses, so decoded pixels
  # match those of the PyTorch pipelines the recipes come from.
  return tf.io.decode_jpeg(image, channels=3, dct_method='INTEGER_ACCURATE') if _is_encoded(image) else image


def normalize(image: tf.Tensor, mean, std) -> tf.Tensor:
  """Maps [0, 255] pixels to (x / 255 - mean) / std per channel."""
  image = tf.cast(image, tf.float32)
  # Mean and std spelled out to the image's shape: TensorFlow's CPU kernels broadcast a (3,) vector
  # against HxWx3 far more slowly than they combine equal shapes (experiments/results/input_pipeline.md).
  mean = tf.broadcast_to(tf.constant(mean, tf.float32), tf.shape(image))
  std = tf.broadcast_to(tf.constant(std, tf.float32), tf.shape(image))
  return (image / 255.0 - mean) / std


def flip_left_right(image: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
  return tf.image.stateless_random_flip_left_right(image, seed=seed)


# --- CIFAR --------------------------------------------------------------------


def cifar_train(image: tf.Tensor, seed: tf.Tensor, *, image_size: int, padding: int) -> tf.Tensor:
  """Zero-pad `padding` pixels on each side, random `image_size` crop, random horizontal flip."""
  crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(seed, num=2))
  image = decode_png(image)
  # Zeros in pixel space, i.e. black borders, as torchvision's RandomCrop(padding=4) pads.
  image = tf.pad(image, [[padding, padding], [padding, padding], [0, 0]])
  image = tf.image.stateless_random_crop(image, [image_size, image_size, 3], seed=crop_seed)
  image = flip_left_right(image, flip_seed)
  return tf.cast(image, tf.float32)


def cifar_eval(image: tf.Tensor, *, image_size: int) -> tf.Tensor:
  image = decode_png(image)
  return tf.cast(tf.ensure_shape(image, [image_size, image_size, 3]), tf.float32)


# --- ImageNet -----------------------------------------------------------------


def image_height_width(image: tf.Tensor) -> tf.Tensor:
  """(height, width) as int32, read from the JPEG header when the image is still encoded."""
  shape = tf.io.extract_jpeg_shape(image) if _is_encoded(image) else tf.shape(image)
  return tf.cast(shape[:2], tf.int32)


def random_resized_crop_window(height_width: tf.Tensor, seed: tf.Tensor, *, area_range=CROP_AREA_RANGE,
                               aspect_range=CROP_ASPECT_RANGE, attempts: int = CROP_ATTEMPTS) -> tf.Tensor:
  """The crop [top, left, height, width] of torchvision's RandomResizedCrop, sampled statelessly.

  As torchvision: up to `attempts` (area fraction uniform in `area_range`,
  aspect ratio width/height log-uniform in `aspect_range`) draws, the first that
  fits is placed uniformly; when none fits, a centre crop of the whole image
  narrowed to the nearest allowed aspect ratio. All attempts are drawn at once
  (the draws a shorter loop would skip are simply unused), which keeps the graph
  free of loops. tf.image.stateless_sample_distorted_bounding_box is not used:
  it draws the aspect ratio uniformly and then the height, not the area, and
  falls back to the whole image rather than to torchvision's centre crop.
  """
  height = tf.cast(height_width[0], tf.float32)
  width = tf.cast(height_width[1], tf.float32)
  draws = tf.random.stateless_uniform([attempts, 4], seed=seed, dtype=tf.float32)
  area = height * width * (area_range[0] + (area_range[1] - area_range[0]) * draws[:, 0])
  log_lo, log_hi = math.log(aspect_range[0]), math.log(aspect_range[1])
  aspect = tf.exp(log_lo + (log_hi - log_lo) * draws[:, 1])
  crop_w = tf.round(tf.sqrt(area * aspect))
  crop_h = tf.round(tf.sqrt(area / aspect))
  fits = (crop_w > 0) & (crop_w <= width) & (crop_h > 0) & (crop_h <= height)
  first = tf.reduce_min(tf.where(fits, tf.range(attempts), attempts))

  def sampled():
    h, w = crop_h[first], crop_w[first]
    # randint(0, H - h) inclusive; min() guards the float product rounding up to the bound.
    top = tf.minimum(tf.floor(draws[first, 2] * (height - h + 1)), height - h)
    left = tf.minimum(tf.floor(draws[first, 3] * (width - w + 1)), width - w)
    return tf.stack([top, left, h, w])

  def centre():
    ratio = width / height
    h = tf.where(ratio < aspect_range[0], tf.round(width / aspect_range[0]), height)
    w = tf.where(ratio > aspect_range[1], tf.round(height * aspect_range[1]), width)
    return tf.stack([tf.floor((height - h) / 2), tf.floor((width - w) / 2), h, w])

  return tf.cast(tf.cond(first < attempts, sampled, centre), tf.int32)


def imagenet_train(image: tf.Tensor, seed: tf.Tensor, *, image_size: int) -> tf.Tensor:
  """Random-resized crop to `image_size` (bilinear, antialiased) and random horizontal flip.

  An encoded image is cropped while decoding (decode_and_crop_jpeg), which skips
  the IDCT of most of the blocks outside the crop.
  """
  crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(seed, num=2))
  window = random_resized_crop_window(image_height_width(image), crop_seed)
  if _is_encoded(image):
    image = tf.io.decode_and_crop_jpeg(image, window, channels=3, dct_method='INTEGER_ACCURATE')
  else:
    image = tf.image.crop_to_bounding_box(image, window[0], window[1], window[2], window[3])
  # Antialiasing as PIL's bilinear (what torchvision resizes PIL images with) does when shrinking.
  image = tf.image.resize(image, [image_size, image_size], method='bilinear', antialias=True)
  return flip_left_right(image, flip_seed)


def resize_shorter_side(image: tf.Tensor, size: int) -> tf.Tensor:
  """Bilinear antialiased resize making the shorter side `size`, as torchvision's Resize(size).

  The longer side becomes int(size * long / short), truncated like torchvision.
  """
  hw = tf.cast(tf.shape(image)[:2], tf.float64)
  short = tf.reduce_min(hw)
  new_hw = tf.where(hw == short, tf.cast(size, tf.float64), tf.floor(size * hw / short))
  return tf.image.resize(image, tf.cast(new_hw, tf.int32), method='bilinear', antialias=True)


def centre_crop(image: tf.Tensor, size: int) -> tf.Tensor:
  """The central size x size window; the offset rounds half to even like torchvision's int(round(.))."""
  hw = tf.shape(image)[:2]
  offsets = tf.cast(tf.round(tf.cast(hw - size, tf.float64) / 2), tf.int32)
  return tf.image.crop_to_bounding_box(image, offsets[0], offsets[1], size, size)


def imagenet_eval(image: tf.Tensor, *, image_size: int, resize_size: int) -> tf.Tensor:
  """Shorter side to `resize_size`, then the central `image_size` crop."""
  image = resize_shorter_side(decode_jpeg(image), resize_size)
  return tf.ensure_shape(centre_crop(image, image_size), [image_size, image_size, 3])
