"""PSNR and SSIM exactly as SR papers report them (docs/training.md, "Super-resolution evaluation").

Published SR numbers come from MATLAB scripts (and BasicSR, which mirrors them);
small convention changes move PSNR by tenths of a dB, so every choice is fixed:

- Inputs are HxWx3 RGB in [0, 255] (uint8 or float, not rescaled), scored in
  float64. The caller rounds/clips SR output beforehand (like a saved image).
- `crop_border` pixels are removed from every side before scoring (0: none).
- Y channel (default): BT.601 luma of studio-swing YCbCr,
  `Y = 16 + (65.481 R + 128.553 G + 24.966 B) / 255`, so Y is in [16, 235].
  It is *not* rounded to integers (BasicSR does not round either).
- `y_channel=False`: PSNR uses the MSE over all three RGB channels together;
  SSIM is computed per RGB channel and the three means are averaged (BasicSR).
- PSNR: `10 log10(255^2 / MSE)` with L = 255 even on Y; identical images give
  `inf` (BasicSR's convention), never an error.
- SSIM (Wang et al.'s `ssim_index.m`): 11x11 Gaussian window, sigma 1.5,
  K1 = 0.01, K2 = 0.03, L = 255, 'valid' filtering (only positions where the
  whole window lies inside the image), and the mean of that SSIM map.
"""

import numpy as np

Y_WEIGHTS = np.array([65.481, 128.553, 24.966], dtype=np.float64) / 255.0
Y_OFFSET = 16.0
DATA_RANGE = 255.0
SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_K1 = 0.01
SSIM_K2 = 0.03


def _check_rgb(img: np.ndarray, name: str = 'image') -> np.ndarray:
  img = np.asarray(img)
  if img.ndim != 3 or img.shape[2] != 3:
    raise ValueError(f'{name} must be an HxWx3 RGB array, got shape {img.shape}')
  return img


def rgb_to_y(img: np.ndarray) -> np.ndarray:
  """BT.601 luma (float64 HxW, in [16, 235]) of an HxWx3 RGB image in [0, 255]."""
  img = _check_rgb(img).astype(np.float64)
  return img @ Y_WEIGHTS + Y_OFFSET


def _prepare(img, ref, crop_border: int, y_channel: bool) -> tuple[np.ndarray, np.ndarray]:
  """Validates, crops and converts both images; returns float64 HxWxC arrays."""
  img, ref = np.asarray(img), np.asarray(ref)
  if img.shape != ref.shape:
    raise ValueError(f'image shapes differ: img {img.shape} vs ref {ref.shape}')
  img, ref = _check_rgb(img, 'img'), _check_rgb(ref, 'ref')
  crop_border = int(crop_border)
  if crop_border < 0:
    raise ValueError(f'crop_border must be >= 0, got {crop_border}')
  height, width = img.shape[:2]
  if min(height, width) <= 2 * crop_border:
    raise ValueError(f'crop_border {crop_border} leaves nothing of shape {img.shape}')
  if crop_border:
    img = img[crop_border:-crop_border, crop_border:-crop_border]
    ref = ref[crop_border:-crop_border, crop_border:-crop_border]
  if y_channel:
    return rgb_to_y(img)[..., None], rgb_to_y(ref)[..., None]
  return img.astype(np.float64), ref.astype(np.float64)


def psnr(img: np.ndarray, ref: np.ndarray, crop_border: int, y_channel: bool = True) -> float:
  """PSNR in dB (L = 255) of `img` against `ref`; `inf` when they are identical."""
  img, ref = _prepare(img, ref, crop_border, y_channel)
  mse = np.mean((img - ref) ** 2)
  if mse == 0:
    return float('inf')
  return float(10.0 * np.log10(DATA_RANGE ** 2 / mse))


def gaussian_window(size: int = SSIM_WINDOW, sigma: float = SSIM_SIGMA) -> np.ndarray:
  """Normalised 1-D Gaussian; its outer product is MATLAB's fspecial('gaussian')."""
  x = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
  g = np.exp(-x * x / (2.0 * sigma * sigma))
  return g / g.sum()


def _filter_valid(x: np.ndarray, g: np.ndarray) -> np.ndarray:
  """Separable 'valid' correlation of each HxW plane of x (HxWxC) with g x g."""
  k = g.shape[0]
  # Windows appear as a trailing axis, which the matmul with g contracts.
  x = np.lib.stride_tricks.sliding_window_view(x, k, axis=0) @ g
  return np.lib.stride_tricks.sliding_window_view(x, k, axis=1) @ g


def ssim_map(img: np.ndarray, ref: np.ndarray) -> np.ndarray:
  """SSIM map ('valid' positions only) of two float64 HxWxC arrays, per channel."""
  g = gaussian_window()
  c1 = (SSIM_K1 * DATA_RANGE) ** 2
  c2 = (SSIM_K2 * DATA_RANGE) ** 2
  mu_x, mu_y = _filter_valid(img, g), _filter_valid(ref, g)
  # Biased (population) moments, as in the MATLAB reference.
  var_x = _filter_valid(img * img, g) - mu_x * mu_x
  var_y = _filter_valid(ref * ref, g) - mu_y * mu_y
  cov = _filter_valid(img * ref, g) - mu_x * mu_y
  num = (2.0 * mu_x * mu_y + c1) * (2.0 * cov + c2)
  den = (mu_x * mu_x + mu_y * mu_y + c1) * (var_x + var_y + c2)
  return num / den


def ssim(img: np.ndarray, ref: np.ndarray, crop_border: int, y_channel: bool = True) -> float:
  """Mean SSIM of `img` against `ref` (MATLAB reference; RGB: per-channel mean)."""
  img, ref = _prepare(img, ref, crop_border, y_channel)
  if min(img.shape[:2]) < SSIM_WINDOW:
    raise ValueError(f'SSIM needs at least {SSIM_WINDOW}x{SSIM_WINDOW} pixels after '
                     f'cropping, got {img.shape[:2]}')
  # Mean per channel, then across channels: equal sizes make this the same as
  # one global mean, but it states BasicSR's definition.
  per_channel = ssim_map(img, ref).mean(axis=(0, 1))
  return float(per_channel.mean())
