"""Classification input pipelines on tiny prepared TFDS datasets written under the real names.

The datasets are real TFRecord shards and metadata (pfca_jax.data.fake_data): per-process
shares and sub-splits need them, since tfds.testing.mock_data ignores split slicing and
reports no split sizes (what it can serve is tested on its own below).
Examples carry unique labels so that every batch can be traced back to them.
"""

import io
import socket
import time

import numpy as np
import pytest
import skimage.data
import tensorflow as tf
import tensorflow_datasets as tfds
from PIL import Image

from classification_data import (  # noqa: F401 -- fixtures are used by name.
    CHELSEA_LABEL, CIFAR_MEAN, CIFAR_STD, IMAGENET_MEAN, IMAGENET_STD, NUM_CIFAR_TEST, cifar_dir, cifar_images, config,
    imagenet_dir, labels_of, normalised_range, take)
from pfca_jax.data import classification as data
from pfca_jax.data import preprocessing, tfds_source

# --- Errors -------------------------------------------------------------------


def test_unknown_dataset_lists_supported_names(tmp_path):
  with pytest.raises(ValueError, match=r"Unknown dataset 'mnist'.*cifar100, imagenet2012"):
    cfg = config('cifar100', tmp_path)
    cfg.dataset = 'mnist'
    data.dataset_info(cfg)


@pytest.mark.parametrize('dataset, hint', [('cifar100', 'tfds build cifar100 --data_dir='),
                                           ('imagenet2012', 'downloads/manual')])
def test_missing_dataset_fails_fast_offline_in_one_line(tmp_path, monkeypatch, dataset, hint):
  def no_network(*args, **kwargs):
    raise AssertionError(f'network access attempted: {args}')

  monkeypatch.setattr(socket, 'getaddrinfo', no_network)
  monkeypatch.setattr(socket.socket, 'connect', no_network)
  start = time.perf_counter()
  with pytest.raises(tfds_source.DatasetNotFoundError) as error:
    data.dataset_info(config(dataset, tmp_path))
  assert time.perf_counter() - start < 10
  message = str(error.value)
  assert isinstance(error.value, ValueError) and '\n' not in message
  assert f"'{dataset}'" in message and str(tmp_path) in message and hint in message
  assert not list(tmp_path.iterdir()), 'nothing may be written into the data directory'


def test_missing_dataset_names_the_versions_found(tmp_path):
  (tmp_path / 'cifar100' / '3.0.1').mkdir(parents=True)
  (tmp_path / 'cifar100' / '3.0.1' / 'dataset_info.json').write_text('{}')
  with pytest.raises(tfds_source.DatasetNotFoundError, match=r'version 3\.0\.2 .*found only version\(s\) 3\.0\.1'):
    data.dataset_info(config('cifar100', tmp_path))


def test_mock_data_serves_one_process_whole_splits_and_refuses_the_rest(tmp_path):
  # mock_data reports no split sizes and yields every example for any sub-split: sizes
  # come from its cardinality, and shares or slices, which it would silently ignore, fail.
  with tfds.testing.mock_data(num_examples=20):
    cfg = config('cifar100', tmp_path, eval_batch_size=8)
    info = data.dataset_info(cfg)
    assert (info.num_train_examples, info.num_eval_examples) == (20, 20)
    assert data.steps_per_epoch(info, cfg) == 2
    batches = take(data.train_iterator(cfg, info), 5)  # Across two epoch boundaries.
    assert all(b['image'].shape == (8, 32, 32, 3) for b in batches)
    iterator, num_steps = data.eval_iterator(cfg, info)
    assert num_steps == 3 and sum(b['mask'].sum() for b in iterator) == 20
    with pytest.raises(ValueError, match='only whole splits'):
      data.eval_iterator(cfg, info, split='test[:10]')
    with pytest.raises(ValueError, match='2 processes cannot read disjoint shares'):
      data.eval_iterator(cfg, info, process_index=0, process_count=2)


def test_config_errors(cifar_dir, imagenet_dir):
  with pytest.raises(ValueError, match='image_size=64 must be 32'):
    data.dataset_info(config('cifar100', cifar_dir, image_size=64))
  with pytest.raises(ValueError, match='eval_resize_size=16 must be at least'):
    data.dataset_info(config('imagenet2012', imagenet_dir, eval_resize_size=16))
  with pytest.raises(ValueError, match="Split 'val'.*available splits: test, train"):
    data.dataset_info(config('cifar100', cifar_dir, eval_split='val'))
  cfg = config('cifar100', cifar_dir)
  info = data.dataset_info(cfg)
  with pytest.raises(ValueError, match='smaller than one batch'):
    data.steps_per_epoch(info, config('cifar100', cifar_dir, batch_size=64))
  with pytest.raises(ValueError, match='multiple of the process count'):
    data.steps_per_epoch(info, cfg, process_count=3)
  with pytest.raises(ValueError, match='another config'):
    next(data.train_iterator(cfg, data.DatasetInfo(100, 1000, 23, (32, 32, 3))))


# --- Sizes --------------------------------------------------------------------


def test_dataset_info_and_steps_per_epoch(cifar_dir, imagenet_dir):
  cfg = config('cifar100', cifar_dir)
  info = data.dataset_info(cfg)
  assert info == data.DatasetInfo(num_classes=100, num_train_examples=50, num_eval_examples=23,
                                  image_shape=(32, 32, 3))
  assert data.steps_per_epoch(info, cfg) == 50 // 8
  # Every process drops the same remainder: 50 // 4 = 12 examples each, batches of 2.
  assert data.steps_per_epoch(info, cfg, process_count=4) == 6
  assert data.steps_per_epoch(info, config('cifar100', cifar_dir, batch_size=12), process_count=4) == 4
  imagenet = data.dataset_info(config('imagenet2012', imagenet_dir))
  assert (imagenet.num_classes, imagenet.num_train_examples, imagenet.num_eval_examples) == (1000, 20, 7)
  assert imagenet.image_shape == (24, 24, 3)


# --- Train --------------------------------------------------------------------


@pytest.mark.parametrize('dataset, mean, std', [('cifar100', CIFAR_MEAN, CIFAR_STD),
                                                ('imagenet2012', IMAGENET_MEAN, IMAGENET_STD)])
def test_train_batches_shapes_dtypes_and_range(request, dataset, mean, std):
  cfg = config(dataset, request.getfixturevalue({'cifar100': 'cifar_dir', 'imagenet2012': 'imagenet_dir'}[dataset]),
               batch_size=4)
  info = data.dataset_info(cfg)
  batches = take(data.train_iterator(cfg, info), data.steps_per_epoch(info, cfg) + 1)
  size = cfg.image_size
  for batch in batches:
    assert set(batch) == {'image', 'label'}
    assert batch['image'].shape == (4, size, size, 3) and batch['image'].dtype == np.float32
    assert batch['label'].shape == (4,) and batch['label'].dtype == np.int32
  images = np.stack([b['image'] for b in batches])
  low, high = normalised_range(mean, std)
  assert np.all(images >= low - 1e-5) and np.all(images <= high + 1e-5)
  # Normalised, not raw: random images reach near both ends (the exact constants are checked on eval).
  assert np.all(images.min(axis=(0, 1, 2, 3)) < low + 0.5) and np.all(images.max(axis=(0, 1, 2, 3)) > high - 0.5)
  assert max(labels_of(batches)) < info.num_classes


def test_cifar_train_images_are_crops_of_the_padded_originals(cifar_dir, cifar_images):
  cfg = config('cifar100', cifar_dir)
  batch = next(data.train_iterator(cfg, data.dataset_info(cfg)))
  for image, label in zip(batch['image'], batch['label']):
    pixels = np.round((image * CIFAR_STD + CIFAR_MEAN) * 255)
    padded = np.pad(cifar_images['train'][label], [(4, 4), (4, 4), (0, 0)]).astype(np.float64)
    windows = [p[dy:dy + 32, dx:dx + 32] for p in (padded, padded[:, ::-1]) for dy in range(9) for dx in range(9)]
    assert any(np.array_equal(pixels, w) for w in windows), f'label {label} is no crop of its image'


def test_one_epoch_is_a_permutation_of_the_share_and_epochs_differ(cifar_dir):
  cfg = config('cifar100', cifar_dir)
  info = data.dataset_info(cfg)
  spe = data.steps_per_epoch(info, cfg)
  batches = take(data.train_iterator(cfg, info), 2 * spe)
  first, second = labels_of(batches[:spe]), labels_of(batches[spe:])
  assert len(set(first)) == len(first) == len(set(second)) == spe * 8
  assert first != second


def test_same_seed_same_batches_other_seed_other_order(cifar_dir):
  info = data.dataset_info(config('cifar100', cifar_dir))
  run = lambda seed: take(data.train_iterator(config('cifar100', cifar_dir, seed=seed), info), 3)
  a, b, c = run(0), run(0), run(1)
  assert all(np.array_equal(x['image'], y['image']) and np.array_equal(x['label'], y['label']) for x, y in zip(a, b))
  assert labels_of(a) != labels_of(c)


# --- Eval ---------------------------------------------------------------------


@pytest.mark.parametrize('process_count, eval_batch_size', [(1, 5), (2, 6), (3, 6), (3, 24)])
def test_eval_covers_each_example_once_with_equal_steps(cifar_dir, cifar_images, process_count, eval_batch_size):
  cfg = config('cifar100', cifar_dir, eval_batch_size=eval_batch_size)
  info = data.dataset_info(cfg)
  local_batch = eval_batch_size // process_count
  expected_steps = -(-(-(-NUM_CIFAR_TEST // process_count)) // local_batch)
  seen = []
  for p in range(process_count):
    iterator, num_steps = data.eval_iterator(cfg, info, process_index=p, process_count=process_count)
    batches = list(iterator)
    assert num_steps == expected_steps == len(batches)
    for batch in batches:
      assert batch['image'].shape == (local_batch, 32, 32, 3) and batch['mask'].dtype == bool
      assert np.all(batch['image'][~batch['mask']] == 0)
      for image, label in zip(batch['image'][batch['mask']], batch['label'][batch['mask']]):
        # No augmentation: exactly the stored image, normalised.
        want = (cifar_images['test'][label] / 255 - CIFAR_MEAN) / CIFAR_STD
        np.testing.assert_allclose(image, want, atol=1e-5)
        seen.append(int(label))
  assert sorted(seen) == list(range(NUM_CIFAR_TEST))


def test_eval_of_another_split(cifar_dir):
  cfg = config('cifar100', cifar_dir, eval_batch_size=16)
  iterator, num_steps = data.eval_iterator(cfg, data.dataset_info(cfg), split='train[:20]')
  batches = list(iterator)
  assert num_steps == len(batches) == 2
  # TFDS stores examples in an order of its own (a hash of their keys): ask it which come first.
  first_20 = tfds.builder('cifar100', data_dir=cifar_dir).as_dataset(split='train[:20]')
  want = sorted(int(ex['label']) for ex in first_20.as_numpy_iterator())
  assert sorted(np.concatenate([b['label'][b['mask']] for b in batches]).tolist()) == want


# --- Preprocessing ------------------------------------------------------------


def test_cifar_augmentation_crops_and_flips_a_known_image():
  # Red codes the row and green the column; blue is 255, so padding (all zeros) stands out.
  rows, cols = np.meshgrid(np.arange(32) * 8, np.arange(32) * 8, indexing='ij')
  image = np.stack([rows, cols, np.full_like(rows, 255)], axis=-1).astype(np.uint8)
  padded = np.pad(image, [(4, 4), (4, 4), (0, 0)]).astype(np.float32)
  found = set()
  for i in range(150):
    out = preprocessing.cifar_train(tf.constant(image), tf.constant([7, i]), image_size=32, padding=4).numpy()
    matches = [(dy, dx, flip) for flip in (False, True) for dy in range(9) for dx in range(9)
               if np.array_equal(out, (padded[:, ::-1] if flip else padded)[dy:dy + 32, dx:dx + 32])]
    assert len(matches) == 1, f'seed {i}: not a single crop of the padded image'
    found.add(matches[0])
  assert {flip for _, _, flip in found} == {False, True}
  assert len({(dy, dx) for dy, dx, _ in found}) > 40
  assert {dy for dy, _, _ in found} == set(range(9)) and {dx for _, dx, _ in found} == set(range(9))


def jpeg_bytes(image, quality=95):
  buffer = io.BytesIO()
  Image.fromarray(image).save(buffer, format='JPEG', quality=quality)
  return buffer.getvalue()


def pil_resize_centre_crop(jpeg, resize, crop):
  """torchvision's Resize(resize) + CenterCrop(crop) on a PIL image, written out."""
  image = Image.open(io.BytesIO(jpeg)).convert('RGB')
  width, height = image.size
  if width <= height:
    size = (resize, int(resize * height / width))
  else:
    size = (int(resize * width / height), resize)
  resized = np.asarray(image.resize(size, Image.BILINEAR), np.float32)
  top, left = int(round((resized.shape[0] - crop) / 2)), int(round((resized.shape[1] - crop) / 2))
  return resized[top:top + crop, left:left + crop]


# 255: odd margins (15.5 and 79.5 pixels), where the centre crop rounds half to even.
@pytest.mark.parametrize('resize', [256, 255])
@pytest.mark.parametrize('transpose', [False, True])
def test_imagenet_eval_matches_torchvision_resize_and_centre_crop(transpose, resize):
  chelsea = skimage.data.chelsea()  # 300 x 451
  jpeg = jpeg_bytes(np.ascontiguousarray(chelsea.transpose(1, 0, 2)) if transpose else chelsea)
  ours = preprocessing.imagenet_eval(tf.constant(jpeg), image_size=224, resize_size=resize).numpy()
  want = pil_resize_centre_crop(jpeg, resize, 224)
  assert ours.shape == (224, 224, 3)
  # PIL rounds to uint8; otherwise the same antialiased bilinear filter and the same decoder.
  assert np.abs(ours - want).max() < 1.0
  shifted = want[:, 1:] if not transpose else want[1:]
  assert np.abs((ours[:, :-1] if not transpose else ours[:-1]) - shifted).mean() > 3, 'the check cannot see a shift'


def test_imagenet_eval_pipeline_on_a_stored_non_square_image(imagenet_dir):
  cfg = config('imagenet2012', imagenet_dir, image_size=224, eval_resize_size=256, eval_batch_size=8)
  iterator, num_steps = data.eval_iterator(cfg, data.dataset_info(cfg))
  (batch,) = list(iterator)
  assert num_steps == 1 and batch['mask'].tolist() == [True] * 7 + [False]
  (index,) = np.flatnonzero(batch['label'] == CHELSEA_LABEL)
  builder = tfds.builder('imagenet2012', data_dir=imagenet_dir)
  stored = builder.as_dataset(split='validation', decoders={'image': tfds.decode.SkipDecoding()})
  (jpeg,) = [ex['image'] for ex in stored.as_numpy_iterator() if ex['label'] == CHELSEA_LABEL]
  want = (pil_resize_centre_crop(jpeg, 256, 224) / 255 - IMAGENET_MEAN) / IMAGENET_STD
  assert np.abs(batch['image'][index] - want).max() < 1.0 / 255 / 0.224


def test_random_resized_crop_window_bounds_and_fallback():
  windows = np.stack([preprocessing.random_resized_crop_window(tf.constant([120, 200]), tf.constant([1, i])).numpy()
                      for i in range(200)])
  top, left, height, width = windows.T
  assert np.all((top >= 0) & (left >= 0) & (top + height <= 120) & (left + width <= 200))
  # Area in [0.08, 1] and aspect in [3/4, 4/3] of the drawn window, up to rounding its sides to pixels
  # (half a pixel of sides >= 38: 1.3% each); the draws reach both ends of each range.
  area = height * width / (120 * 200)
  assert 0.08 * 0.987 ** 2 <= area.min() < 0.1 and area.max() <= 1.0 and area.std() > 0.15
  aspect = width / height
  assert 0.75 * 0.987 <= aspect.min() < 0.8 and 1.3 < aspect.max() <= 4 / 3 / 0.987
  assert len(set(map(tuple, windows))) > 190
  # A 10 x 400 strip admits no crop of area >= 8% with aspect <= 4/3: torchvision's fallback
  # is then the centre crop of full height and width round(10 * 4/3) = 13.
  fallback = preprocessing.random_resized_crop_window(tf.constant([10, 400]), tf.constant([1, 2])).numpy()
  assert fallback.tolist() == [0, (400 - 13) // 2, 10, 13]
