"""PSNR/SSIM: analytic golden values, a hand-computed SSIM, and agreement with skimage.metrics on real photos."""

import math

import numpy as np
import pytest
import skimage.data
import skimage.metrics

from pfca_jax import metrics
from pfca_jax.imresize import imresize

Y_GAIN = (65.481 + 128.553 + 24.966) / 255.0


def photos():
  return {'astronaut': skimage.data.astronaut(), 'coffee': skimage.data.coffee(),
          'chelsea': skimage.data.chelsea()}


def degrade(img, kind, rng):
  """Realistic SR-style outputs: bicubic x4 round trip (mod-cropped), or Gaussian noise."""
  if kind == 'bicubic':
    h, w = (s - s % 4 for s in img.shape[:2])
    hr = img[:h, :w]
    return imresize(imresize(hr, 1 / 4), 4), hr
  noisy = img.astype(np.float64) + rng.normal(0, 8, img.shape)
  return np.clip(np.round(noisy), 0, 255).astype(np.uint8), img


def skimage_ssim(a, b, **kw):
  return skimage.metrics.structural_similarity(
      a, b, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=255, **kw)


def test_rgb_to_y_white_black_and_primaries():
  img = np.array([[[255, 255, 255], [0, 0, 0], [255, 0, 0], [0, 255, 0], [0, 0, 255]]], np.uint8)
  y = metrics.rgb_to_y(img)
  assert y.dtype == np.float64 and y.shape == (1, 5)
  np.testing.assert_allclose(y[0], [235.0, 16.0, 16 + 65.481, 16 + 128.553, 16 + 24.966], atol=1e-12)


def test_identical_images_give_inf_psnr_and_unit_ssim():
  img = photos()['chelsea'][:64, :80]
  for y in (True, False):
    assert metrics.psnr(img, img.copy(), 4, y_channel=y) == math.inf
    assert metrics.ssim(img, img.copy(), 4, y_channel=y) == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize('d', [1, 3, 10])
def test_constant_offset_psnr_golden(d):
  # Values kept in [0, 245] so adding d never saturates.
  img = (photos()['coffee'][:100, :120].astype(np.int64) * 245 // 255).astype(np.uint8)
  shifted = img + np.uint8(d)
  assert metrics.psnr(shifted, img, 0, y_channel=False) == pytest.approx(20 * math.log10(255 / d), abs=1e-9)
  assert metrics.psnr(shifted, img, 0) == pytest.approx(20 * math.log10(255 / (d * Y_GAIN)), abs=1e-9)


def test_crop_border_removes_exactly_that_many_pixels():
  img = photos()['astronaut'][:40, :50]
  bad = img.copy()
  bad[3, 20] = 255 - bad[3, 20]  # inside a border of 4, outside a border of 3
  assert metrics.psnr(bad, img, 4) == math.inf
  assert metrics.psnr(bad, img, 3) < 100
  assert metrics.ssim(bad, img, 4) == 1.0
  assert metrics.ssim(bad, img, 3) < 1.0


def test_ssim_single_window_matches_hand_formula():
  # An 11x11 image has exactly one 'valid' position: SSIM is the textbook formula
  # with the fspecial('gaussian', 11, 1.5) weights over the whole image.
  rng = np.random.default_rng(1)
  a = rng.uniform(0, 255, (11, 11, 3))
  b = np.clip(a + rng.normal(0, 20, a.shape), 0, 255)
  ya, yb = metrics.rgb_to_y(a), metrics.rgb_to_y(b)
  r = np.arange(11) - 5.0
  w = np.exp(-(r[:, None] ** 2 + r[None, :] ** 2) / (2 * 1.5 ** 2))
  w /= w.sum()
  mx, my = (w * ya).sum(), (w * yb).sum()
  vx, vy = (w * (ya - mx) ** 2).sum(), (w * (yb - my) ** 2).sum()
  cxy = (w * (ya - mx) * (yb - my)).sum()
  c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
  want = (2 * mx * my + c1) * (2 * cxy + c2) / ((mx ** 2 + my ** 2 + c1) * (vx + vy + c2))
  assert metrics.ssim(a, b, 0) == pytest.approx(want, abs=1e-12)
  assert want < 0.99  # the case is not trivially 1


@pytest.mark.parametrize('name', ['astronaut', 'coffee', 'chelsea'])
@pytest.mark.parametrize('kind', ['bicubic', 'noise'])
def test_matches_skimage_on_photos(name, kind):
  sr, hr = degrade(photos()[name], kind, np.random.default_rng(0))
  crop = 4
  sr_c, hr_c = sr[crop:-crop, crop:-crop], hr[crop:-crop, crop:-crop]
  y_sr, y_hr = metrics.rgb_to_y(sr_c), metrics.rgb_to_y(hr_c)

  want = skimage.metrics.peak_signal_noise_ratio(y_hr, y_sr, data_range=255)
  assert metrics.psnr(sr, hr, crop) == pytest.approx(want, abs=1e-10)
  want_rgb = skimage.metrics.peak_signal_noise_ratio(hr_c.astype(np.float64), sr_c.astype(np.float64),
                                                     data_range=255)
  assert metrics.psnr(sr, hr, crop, y_channel=False) == pytest.approx(want_rgb, abs=1e-10)

  # skimage filters with reflect padding over the full image, then averages its
  # map with (11 - 1) // 2 = 5 pixels cropped from each side: exactly the set of
  # positions where the window fits, i.e. MATLAB's 'valid' map. So the means agree.
  _, smap = skimage_ssim(y_sr, y_hr, full=True)
  ours_map = metrics.ssim_map(y_sr[..., None], y_hr[..., None])[..., 0]
  np.testing.assert_allclose(ours_map, smap[5:-5, 5:-5], atol=1e-10)
  assert metrics.ssim(sr, hr, crop) == pytest.approx(skimage_ssim(y_sr, y_hr), abs=1e-10)
  want_rgb = skimage_ssim(sr_c.astype(np.float64), hr_c.astype(np.float64), channel_axis=2)
  assert metrics.ssim(sr, hr, crop, y_channel=False) == pytest.approx(want_rgb, abs=1e-10)


def test_uint8_and_float_inputs_agree():
  sr, hr = degrade(photos()['chelsea'], 'noise', np.random.default_rng(2))
  assert metrics.psnr(sr, hr, 2) == metrics.psnr(sr.astype(np.float32), hr.astype(np.float64), 2)
  assert metrics.ssim(sr, hr, 2) == pytest.approx(metrics.ssim(sr.astype(np.float32), hr, 2), abs=1e-14)


def test_scores_are_symmetric_and_in_a_plausible_range():
  # PSNR/SSIM are symmetric in (img, ref); a changed image must score lower.
  sr, hr = degrade(photos()['astronaut'], 'noise', np.random.default_rng(3))
  assert metrics.psnr(sr, hr, 0) == pytest.approx(metrics.psnr(hr, sr, 0))
  assert 20 < metrics.psnr(sr, hr, 0) < 40
  assert 0.3 < metrics.ssim(sr, hr, 0) < 0.99


@pytest.mark.parametrize('fn', [metrics.psnr, metrics.ssim])
def test_bad_shapes_raise_one_line_value_error(fn):
  a = np.zeros((32, 32, 3))
  with pytest.raises(ValueError, match=r'\(32, 32, 3\).*\(32, 31, 3\)') as err:
    fn(a, np.zeros((32, 32 - 1, 3)), 0)
  assert '\n' not in str(err.value)
  with pytest.raises(ValueError, match=r'\(32, 32\)'):
    fn(np.zeros((32, 32)), np.zeros((32, 32)), 0)
  with pytest.raises(ValueError, match=r'\(32, 32, 4\)'):
    fn(np.zeros((32, 32, 4)), np.zeros((32, 32, 4)), 0)
  with pytest.raises(ValueError, match='crop_border'):
    fn(a, a, 16)


def test_ssim_rejects_images_smaller_than_the_window():
  a = np.zeros((20, 20, 3))
  with pytest.raises(ValueError, match='11x11'):
    metrics.ssim(a, a, 5)
