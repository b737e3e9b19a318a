"""The super-resolution scores of a whole run at x3 and x4, recomputed from its saved images with NumPy.

docs/training.md ("Super-resolution evaluation"): HR mod-cropped to the scale, output clipped and rounded
to 8 bits, PSNR/SSIM in float64 on the BT.601 Y channel after removing `scale` pixels from every border.
test_ema.py and test_quickstart.py score only x2, where a crop hard-coded to 2 would pass; here a run of the
trainer at each of x3 and x4 (one training step of a tiny MSRResNet) evaluates a folder of real photo crops,
whose sizes are multiples of neither scale, and a synthetic image. Its samples (LR | bicubic | SR | HR
panels, written for every image) are the exact 8-bit images it scored, so each score in results.json is
recomputed from them here, without pfca_jax.metrics, and must hold at `scale` and at no other crop.
"""

import json
import os

import numpy as np
import pytest
import skimage.data
import skimage.metrics
from PIL import Image

from pfca_jax import train
from pfca_jax.train import config_defaults

# HR crops (top, left, height, width) of skimage photos: heights and widths that neither 3 nor 4 divides,
# so that the mod-crop removes rows and columns at both scales. One size: the body compiles once per LR shape.
PHOTOS = {'coffee': (60, 150, 53, 70), 'chelsea': (80, 200, 53, 70)}


def y_channel(rgb: np.ndarray) -> np.ndarray:
  """BT.601 luma from 8-bit RGB, as BasicSR/MATLAB's rgb2ycbcr (offset 16, not rounded)."""
  r, g, b = (rgb[..., i].astype(np.float64) for i in range(3))
  return 16 + (65.481 * r + 128.553 * g + 24.966 * b) / 255


def crop(img: np.ndarray, border: int) -> np.ndarray:
  return img[border:-border, border:-border]


def psnr(a: np.ndarray, b: np.ndarray) -> float:
  mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
  return float(10 * np.log10(255.0 ** 2 / mse))


def ssim(a: np.ndarray, b: np.ndarray) -> float:
  """MATLAB's SSIM (Gaussian 11x11, sigma 1.5, valid part) as scikit-image computes it."""
  return float(skimage.metrics.structural_similarity(a, b, gaussian_weights=True, sigma=1.5,
                                                     use_sample_covariance=False, data_range=255))


def scores(sr: np.ndarray, bicubic: np.ndarray, hr: np.ndarray, border: int) -> dict:
  """The per-image scores of results.json, at a crop of `border` pixels."""
  y_sr, y_bicubic, y_hr = (crop(y_channel(x), border) for x in (sr, bicubic, hr))
  return {'psnr_y': psnr(y_sr, y_hr), 'ssim_y': ssim(y_sr, y_hr), 'psnr_rgb': psnr(crop(sr, border), crop(hr, border)),
          'bicubic_psnr_y': psnr(y_bicubic, y_hr), 'bicubic_ssim_y': ssim(y_bicubic, y_hr)}


def sr_config(scale: int, folder: str):
  """One step of MSRResNet (8 features, 1 block) on synthetic patches, then one evaluation writing every sample."""
  config = config_defaults.super_resolution(scale)
  config.update(dict(dataset='synthetic', batch_size=8, hr_patch_size=4 * scale, num_train_steps=1,
                     log_every_steps=1, eval_every_steps=1, checkpoint_every_steps=1, eval_folders=folder,
                     eval_tile=12, eval_tile_overlap=2, eval_num_samples=len(PHOTOS), ema_decay=0.0))
  config.synthetic.update(dict(train_images=8, eval_images=1))
  config.model.update(num_feat=8, num_block=1)
  return config


@pytest.fixture(scope='module', params=[3, 4], ids=lambda scale: f'x{scale}')
def run(request, tmp_path_factory):
  """(scale, workdir, {set: {image name: HR as written}}) of one run of the trainer at that scale."""
  scale, root = request.param, tmp_path_factory.mktemp(f'x{request.param}')
  folder = root / 'Photos' / 'HR'
  folder.mkdir(parents=True)
  written = {}
  for name, (top, left, height, width) in PHOTOS.items():
    written[name] = np.ascontiguousarray(getattr(skimage.data, name)()[top:top + height, left:left + width])
    Image.fromarray(written[name]).save(folder / f'{name}.png')
  workdir = str(root / 'run')
  train.train_and_evaluate(sr_config(scale, str(folder)), workdir)
  return scale, workdir, {'Photos': written, 'synthetic': {}}


def _panels(workdir: str, set_name: str, image_name: str) -> tuple[np.ndarray, ...]:
  """LR (nearest) | bicubic | SR | HR of a sample, as the four HR-sized uint8 images."""
  panel = np.asarray(Image.open(os.path.join(workdir, 'samples', set_name, f'{image_name}_step1.png')))
  width = panel.shape[1] // 4
  assert panel.shape[1] == 4 * width and panel.dtype == np.uint8
  return tuple(panel[:, i * width:(i + 1) * width] for i in range(4))


def test_every_score_is_that_of_a_crop_of_exactly_scale_pixels_on_the_y_channel(run):
  scale, workdir, written = run
  per_image = json.load(open(os.path.join(workdir, 'results.json')))['per_image']
  assert {name: [row['name'] for row in rows] for name, rows in per_image.items()} == {
      'Photos': sorted(PHOTOS), 'synthetic': ['synthetic_00']}
  for set_name, rows in per_image.items():
    for row in rows:
      _, bicubic, sr, hr = _panels(workdir, set_name, row['name'])
      if row['name'] in written[set_name]:  # The HR scored is the written photo, mod-cropped at bottom and right.
        photo = written[set_name][row['name']]
        assert hr.shape[:2] == (photo.shape[0] // scale * scale, photo.shape[1] // scale * scale)
        np.testing.assert_array_equal(hr, photo[:hr.shape[0], :hr.shape[1]])
      got = {key: row[key] for key in scores(sr, bicubic, hr, scale)}
      assert got == pytest.approx(scores(sr, bicubic, hr, scale), rel=1e-9, abs=1e-9), (set_name, row['name'])
      # The images are such that a crop of one pixel more or less, or the x2 crop, scores differently (by far
      # more than the tolerance above): the test would see a crop other than `scale`.
      for border in {scale - 1, scale + 1, 2}:
        other = scores(sr, bicubic, hr, border)
        for key in ('psnr_y', 'ssim_y', 'bicubic_psnr_y'):
          assert abs(other[key] - got[key]) > 1e-6, (set_name, row['name'], key, border)


def test_the_means_are_those_of_the_images(run):
  _, workdir, _ = run
  results = json.load(open(os.path.join(workdir, 'results.json')))
  for set_name, rows in results['per_image'].items():
    for key in ('psnr_y', 'ssim_y', 'psnr_rgb', 'bicubic_psnr_y', 'bicubic_ssim_y'):
      assert results['final'][f'eval/{set_name}/{key}'] == pytest.approx(np.mean([row[key] for row in rows]),
                                                                          rel=1e-12)
