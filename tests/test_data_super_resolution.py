"""Super-resolution input pipelines on a tiny DIV2K written under its real TFDS name.

The fake div2k/bicubic_x2 holds real TFRecords (as pfca_jax.data.fake_data writes for
classification): noisy crops of skimage photos as HR and their 2x2 block averages as
LR, so that every training patch can be found back in its source image. That tells
which image, position and flip/transpose produced each patch, for HR and LR
separately, which is what the alignment and augmentation tests check.
tfds.testing.mock_data cannot do this: its LR and HR are unrelated random images.
"""

import numpy as np
import ml_collections
import pytest
import skimage.data
import tensorflow_datasets as tfds
from numpy.lib.stride_tricks import sliding_window_view
from PIL import Image

from pfca_jax.data import fake_data
from pfca_jax.data import super_resolution as sr
from pfca_jax.data import tfds_source
from pfca_jax.errors import UserError

SCALE, HR_PATCH, LR_PATCH = 2, 16, 8
NUM_TRAIN, PATCHES_PER_IMAGE, BATCH = 10, 3, 6
STEPS = NUM_TRAIN * PATCHES_PER_IMAGE // BATCH  # 5, no remainder: each image exactly 3 times an epoch.


def block_average(image, scale):
  """LR made the simplest exact way, so that an aligned HR patch averages to its LR patch."""
  image = sr.mod_crop(image, scale).astype(np.float64)
  h, w = image.shape[0] // scale, image.shape[1] // scale
  return np.round(image.reshape(h, scale, w, scale, -1).mean(axis=(1, 3))).astype(np.uint8)


def photo_crops(num, seed, sizes):
  """Crops of real photos with a little noise, so no patch is symmetric or repeated."""
  rng = np.random.default_rng(seed)
  photos = [skimage.data.astronaut(), skimage.data.chelsea(), skimage.data.coffee()]
  crops = []
  for i in range(num):
    photo = photos[i % len(photos)]
    h, w = sizes(rng)
    top, left = rng.integers(0, photo.shape[0] - h), rng.integers(0, photo.shape[1] - w)
    noise = rng.integers(-4, 5, size=(h, w, 3))
    crops.append(np.clip(photo[top:top + h, left:left + w].astype(int) + noise, 0, 255).astype(np.uint8))
  return crops


def write_fake_div2k(data_dir, splits, *, num_shards=2):
  fake_data.write_fake_div2k(data_dir, SCALE, splits, num_shards=num_shards)


@pytest.fixture(scope='module')
def train_hr():
  # Odd sizes too: HR 33 rows has LR 16 rows, the last HR row being unused.
  return photo_crops(NUM_TRAIN, 0, lambda rng: rng.integers(HR_PATCH, 41, size=2))


@pytest.fixture(scope='module')
def valid_hr():
  sizes = iter([(33, 47), (40, 21), (25, 25), (18, 30), (37, 16)])
  return photo_crops(5, 1, lambda rng: next(sizes))


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory, train_hr, valid_hr):
  data_dir = str(tmp_path_factory.mktemp('tfds'))
  write_fake_div2k(data_dir, {'train': [(block_average(hr, SCALE), hr) for hr in train_hr],
                              'validation': [(block_average(hr, SCALE), hr) for hr in valid_hr]})
  return data_dir


def make_config(data_dir, **overrides):
  fields = dict(dataset='div2k', data_dir=str(data_dir), scale=SCALE, hr_patch_size=HR_PATCH,
                patches_per_image=PATCHES_PER_IMAGE, cache_train=False, shuffle_buffer_size=16, seed=0,
                batch_size=BATCH, train_split='train', eval_split='validation')
  fields.update(overrides)
  return ml_collections.ConfigDict(fields)


def take(iterator, n):
  return [next(iterator) for _ in range(n)]


def assert_same_batches(a, b):
  assert len(a) == len(b)
  for x, y in zip(a, b):
    assert x.keys() == y.keys()
    for key in x:
      np.testing.assert_array_equal(x[key], y[key])


# --- Finding patches back in their source images ---------------------------------------


def augment(image, code):
  """Flips and transpose in the pipeline's order: bit 0 horizontal, bit 1 vertical, bit 2 transpose."""
  if code & 1:
    image = image[:, ::-1]
  if code & 2:
    image = image[::-1]
  if code & 4:
    image = image.transpose(1, 0, 2)
  return image


def unaugment(image, code):
  """The inverse of augment(., code): each step is its own inverse, undone in reverse order."""
  if code & 4:
    image = image.transpose(1, 0, 2)
  if code & 2:
    image = image[::-1]
  if code & 1:
    image = image[:, ::-1]
  return image


def locate(patch, sources):
  """The single (image index, augmentation code, top, left) that produced a uint8 patch."""
  found = []
  for index, source in enumerate(sources):
    windows = sliding_window_view(source, patch.shape)[:, :, 0]
    for code in range(8):
      hits = np.argwhere(np.all(windows == unaugment(patch, code), axis=(2, 3, 4)))
      found += [(index, code, int(top), int(left)) for top, left in hits]
  assert len(found) == 1, f'patch found {len(found)} times: {found}'
  return found[0]


def to_uint8(batch_images):
  return np.round(batch_images * 255).astype(np.uint8)


def trace(batches, train_hr):
  """(image, code, HR top, HR left) of every example, checking LR and HR agree on all of it."""
  train_lr = [block_average(hr, SCALE) for hr in train_hr]
  traced = []
  for batch in batches:
    for lr, hr in zip(to_uint8(batch['lr']), to_uint8(batch['hr'])):
      hr_where, lr_where = locate(hr, train_hr), locate(lr, train_lr)
      assert hr_where[:2] == lr_where[:2], (hr_where, lr_where)  # Same image, same flips/transpose.
      assert hr_where[2:] == (SCALE * lr_where[2], SCALE * lr_where[3]), (hr_where, lr_where)
      traced.append(hr_where)
  return traced


def test_trace_can_fail(train_hr):
  """The checks above reject a misaligned pair and a pair augmented differently."""
  hr = train_hr[0][:HR_PATCH, :HR_PATCH]
  lr = block_average(train_hr[0], SCALE)[:LR_PATCH, :LR_PATCH]
  shifted = {'lr': lr[None] / 255, 'hr': train_hr[0][2:2 + HR_PATCH, :HR_PATCH][None] / 255}
  with pytest.raises(AssertionError):
    trace([shifted], train_hr)
  flipped_hr_only = {'lr': lr[None] / 255, 'hr': augment(hr, 1)[None] / 255}
  with pytest.raises(AssertionError):
    trace([flipped_hr_only], train_hr)
  trace([{'lr': augment(lr, 5)[None] / 255, 'hr': augment(hr, 5)[None] / 255}], train_hr)


# --- Info, errors ------------------------------------------------------------------------


def test_dataset_info_and_steps(data_dir):
  config = make_config(data_dir)
  info = sr.dataset_info(config)
  assert info == sr.SRInfo(num_train_examples=NUM_TRAIN, scale=SCALE, lr_patch=LR_PATCH, hr_patch=HR_PATCH)
  assert sr.steps_per_epoch(info, config, process_count=1) == STEPS
  assert sr.steps_per_epoch(info, config, process_count=2) == (NUM_TRAIN // 2 * PATCHES_PER_IMAGE) // (BATCH // 2)
  assert sr.steps_per_epoch(info, make_config(data_dir, batch_size=4), process_count=1) == 7  # 30 // 4
  with pytest.raises(UserError, match='batch_size'):
    sr.steps_per_epoch(info, make_config(data_dir, batch_size=40), process_count=1)


def test_missing_dataset_says_how_to_prepare(tmp_path):
  with pytest.raises(tfds_source.DatasetNotFoundError) as error:
    sr.dataset_info(make_config(tmp_path, scale=4, hr_patch_size=128))
  message = str(error.value)
  assert '\n' not in message
  assert f'tfds build div2k/bicubic_x4 --data_dir={tmp_path}' in message


@pytest.mark.parametrize('overrides, match', [
    (dict(hr_patch_size=15), 'hr_patch_size'),
    (dict(scale=8), 'scale'),
    (dict(dataset='set5'), 'div2k'),
    (dict(patches_per_image=0), 'patches_per_image'),
])
def test_bad_config(data_dir, overrides, match):
  with pytest.raises(UserError, match=match):
    sr.dataset_info(make_config(data_dir, **overrides))


# --- Training batches --------------------------------------------------------------------


def test_batches_shapes_dtypes_ranges(data_dir):
  config = make_config(data_dir)
  batch = next(sr.train_iterator(config, sr.dataset_info(config), process_index=0, process_count=1))
  assert batch.keys() == {'lr', 'hr'}
  assert batch['lr'].shape == (BATCH, LR_PATCH, LR_PATCH, 3) and batch['lr'].dtype == np.float32
  assert batch['hr'].shape == (BATCH, HR_PATCH, HR_PATCH, 3) and batch['hr'].dtype == np.float32
  for images in batch.values():
    assert 0 <= images.min() and images.max() <= 1 and images.max() > 0.5
    # Exactly pixel / 255.
    np.testing.assert_array_equal(images, to_uint8(images).astype(np.float32) / 255)


@pytest.mark.parametrize('cache_train', [False, True])
def test_patches_aligned_augmented_alike_and_each_image_per_epoch(data_dir, train_hr, cache_train):
  config = make_config(data_dir, cache_train=cache_train)
  batches = take(sr.train_iterator(config, sr.dataset_info(config), process_index=0, process_count=1), 2 * STEPS)
  # Alignment, directly: the HR patch averaged over 2x2 blocks is the LR patch.
  for batch in batches:
    for lr, hr in zip(to_uint8(batch['lr']), to_uint8(batch['hr'])):
      np.testing.assert_array_equal(block_average(hr, SCALE), lr)
  traced = trace(batches, train_hr)
  per_epoch = BATCH * STEPS
  for epoch in range(2):
    images = [t[0] for t in traced[epoch * per_epoch:(epoch + 1) * per_epoch]]
    assert np.bincount(images, minlength=NUM_TRAIN).tolist() == [PATCHES_PER_IMAGE] * NUM_TRAIN
  assert sorted({t[1] for t in traced}) == list(range(8))  # All flip/transpose combinations occur.
  assert len({t[2:] for t in traced}) > len(traced) // 2  # Positions vary.
  assert len({t[2] for t in traced}) > 3 and any(t[2] % 2 == 0 and t[2] > 0 for t in traced)
  # The order is shuffled, and differently in each epoch.
  first, second = [t[0] for t in traced[:per_epoch]], [t[0] for t in traced[per_epoch:]]
  assert first != second and first != sorted(first)


@pytest.mark.parametrize('cache_train', [False, True])
@pytest.mark.parametrize('window', [4, 16])  # Windows inside one pass over the images, and across passes.
def test_resume_at_every_step_is_bit_identical(data_dir, cache_train, window):
  config = make_config(data_dir, cache_train=cache_train, shuffle_buffer_size=window)
  info = sr.dataset_info(config)
  full = take(sr.train_iterator(config, info, process_index=0, process_count=1), 2 * STEPS + 2)
  for start in range(1, 2 * STEPS + 2):
    resumed = take(sr.train_iterator(config, info, start, process_index=0, process_count=1), 2 * STEPS + 2 - start)
    assert_same_batches(resumed, full[start:])


def test_seed_changes_batches(data_dir):
  info = sr.dataset_info(make_config(data_dir))
  a = next(sr.train_iterator(make_config(data_dir, seed=0), info, process_index=0, process_count=1))
  b = next(sr.train_iterator(make_config(data_dir, seed=1), info, process_index=0, process_count=1))
  assert not np.array_equal(a['hr'], b['hr'])


def test_processes_read_disjoint_shares(data_dir, train_hr):
  config = make_config(data_dir)
  info = sr.dataset_info(config)
  steps = sr.steps_per_epoch(info, config, process_count=2)
  images = []
  for process_index in range(2):
    batches = take(sr.train_iterator(config, info, process_index=process_index, process_count=2), steps)
    assert batches[0]['hr'].shape == (BATCH // 2, HR_PATCH, HR_PATCH, 3)
    images.append([t[0] for t in trace(batches, train_hr)])
  for share in images:
    assert np.bincount(share, minlength=NUM_TRAIN).max() == PATCHES_PER_IMAGE
    assert len(set(share)) == NUM_TRAIN // 2
  assert not set(images[0]) & set(images[1])


def test_info_from_another_config_is_refused(data_dir):
  info = sr.dataset_info(make_config(data_dir))
  with pytest.raises(ValueError, match='info'):
    next(sr.train_iterator(make_config(data_dir, hr_patch_size=8), info, process_index=0, process_count=1))


# --- Evaluation images -------------------------------------------------------------------


def test_eval_images_are_mod_cropped_pairs(data_dir, valid_hr):
  config = make_config(data_dir)
  pairs = list(sr.eval_images(config, process_index=0, process_count=1))
  assert [p['name'] for p in pairs] == [f'validation_{i:04d}' for i in range(len(valid_hr))]
  matched = []
  for pair in pairs:
    assert pair['lr'].dtype == np.uint8 and pair['hr'].dtype == np.uint8
    h, w, _ = pair['lr'].shape
    assert pair['hr'].shape == (SCALE * h, SCALE * w, 3)
    # It is the mod-crop of exactly one original, with that original's LR.
    index = [i for i, hr in enumerate(valid_hr)
             if sr.mod_crop(hr, SCALE).shape == pair['hr'].shape and np.array_equal(sr.mod_crop(hr, SCALE), pair['hr'])]
    assert len(index) == 1
    np.testing.assert_array_equal(pair['lr'], block_average(valid_hr[index[0]], SCALE))
    matched.append(index[0])
  assert sorted(matched) == list(range(len(valid_hr)))
  # Two processes share the images between them exactly once, names continuing across the shares.
  shares = [list(sr.eval_images(config, process_index=i, process_count=2)) for i in range(2)]
  assert [len(s) for s in shares] == [3, 2]
  assert [p['name'] for s in shares for p in s] == [p['name'] for p in pairs]
  for a, b in zip([p for s in shares for p in s], pairs):
    np.testing.assert_array_equal(a['hr'], b['hr'])


def test_eval_images_missing_split_fails_at_call(data_dir):
  with pytest.raises(UserError, match='test'):
    sr.eval_images(make_config(data_dir), 'test', process_index=0, process_count=1)


# --- Benchmark folders -------------------------------------------------------------------


@pytest.fixture
def benchmark(tmp_path):
  """HR folder with a colour PNG, a grayscale BMP and an RGBA PNG of odd sizes, and a BasicSR-style LR folder."""
  rng = np.random.default_rng(3)
  hr_dir, lr_dir = tmp_path / 'HR', tmp_path / 'LR'
  hr_dir.mkdir()
  lr_dir.mkdir()
  colour = rng.integers(0, 256, size=(27, 33, 3), dtype=np.uint8)
  gray = rng.integers(0, 256, size=(20, 17), dtype=np.uint8)
  rgba = rng.integers(0, 256, size=(13, 24, 4), dtype=np.uint8)
  Image.fromarray(colour).save(hr_dir / 'b_colour.png')
  Image.fromarray(gray).save(hr_dir / 'a_gray.bmp')
  Image.fromarray(rgba, mode='RGBA').save(hr_dir / 'c_rgba.png')
  (hr_dir / 'notes.txt').write_text('not an image')
  expected_hr = {'a_gray': np.repeat(gray[:, :, None], 3, axis=2)[:20, :16], 'b_colour': colour[:26, :32],
                 'c_rgba': rgba[:12, :24, :3]}
  expected_lr = {name: block_average(hr, SCALE) for name, hr in expected_hr.items()}
  Image.fromarray(expected_lr['a_gray']).save(lr_dir / 'a_grayx2.png')  # BasicSR's naming.
  Image.fromarray(expected_lr['b_colour']).save(lr_dir / 'b_colour.png')
  Image.fromarray(expected_lr['c_rgba']).save(lr_dir / 'c_rgbax2.png')
  return hr_dir, lr_dir, expected_hr, expected_lr


def check_pairs(pairs, expected_hr, expected_lr):
  assert [p['name'] for p in pairs] == ['a_gray', 'b_colour', 'c_rgba']  # Sorted by file name.
  for pair in pairs:
    assert pair['hr'].dtype == np.uint8 and pair['lr'].dtype == np.uint8
    np.testing.assert_array_equal(pair['hr'], expected_hr[pair['name']])
    np.testing.assert_array_equal(pair['lr'], expected_lr[pair['name']])


def test_folder_images_with_lr_folder(benchmark):
  hr_dir, lr_dir, expected_hr, expected_lr = benchmark
  check_pairs(list(sr.folder_images(str(hr_dir), SCALE, lr_dir=str(lr_dir))), expected_hr, expected_lr)


def test_folder_images_downscaled(benchmark):
  hr_dir, _, expected_hr, expected_lr = benchmark
  calls = []

  def downscale(hr, factor):
    calls.append(factor)
    return block_average(hr, round(1 / factor)).astype(np.float64) + 0.2  # Float output is rounded back.

  check_pairs(list(sr.folder_images(str(hr_dir), SCALE, downscale=downscale)), expected_hr, expected_lr)
  assert calls == [1 / SCALE] * 3


def test_folder_images_errors(benchmark, tmp_path):
  hr_dir, lr_dir, _, _ = benchmark
  (lr_dir / 'b_colour.png').unlink()
  with pytest.raises(ValueError, match="no LR image for HR image 'b_colour'") as error:
    sr.folder_images(str(hr_dir), SCALE, lr_dir=str(lr_dir))
  assert '\n' not in str(error.value)
  Image.fromarray(np.zeros((5, 5, 3), np.uint8)).save(lr_dir / 'b_colour.png')  # Wrong size.
  with pytest.raises(ValueError, match='b_colour'):
    list(sr.folder_images(str(hr_dir), SCALE, lr_dir=str(lr_dir)))
  empty = tmp_path / 'empty'
  empty.mkdir()
  for folder in (empty, tmp_path / 'missing'):
    with pytest.raises(ValueError, match=str(folder)) as error:
      sr.folder_images(str(folder), SCALE, downscale=lambda hr, f: hr)
    assert '\n' not in str(error.value)
