"""MATLAB-compatible bicubic `imresize` (docs/training.md, "Super-resolution evaluation").

SR benchmarks publish numbers for LR images made by MATLAB's `imresize(img,
1/scale, 'bicubic')`; a different resampler (PIL, `jax.image.resize`, OpenCV)
shifts PSNR by tenths of a dB, so LR inputs must be made exactly this way. This
reproduces MATLAB's algorithm, the one BasicSR's `imresize` also mirrors:

- Keys cubic kernel with a = -0.5, support 4 input pixels.
- When downscaling (scale < 1) the kernel is stretched by 1/scale and scaled by
  `scale` (antialiasing), so every output pixel averages over 4/scale inputs.
- Output pixel x (1-based) is centred on input coordinate
  `u = x / scale + 0.5 * (1 - 1 / scale)`, i.e. pixel centres are aligned, not
  corners; weights are normalised to sum to one.
- Taps outside the image are folded back with MATLAB's symmetric extension
  (the edge pixel repeats: ... 2 1 | 1 2 3 ... n | n n-1 ...).
- Output size is `ceil(in * scale)` per axis, and `scale` itself (not the ratio
  of sizes) positions the samples, as in MATLAB.
- Rows are resized first, then columns (MATLAB resizes the axis with the smaller
  scale first and takes rows on a tie; one scalar scale is always a tie).
- uint8 input: MATLAB's resampler keeps the input class, so the result of each
  1-D pass is clipped to [0, 255] and rounded half away from zero before the
  next pass. Float input is never rounded or clipped.
"""

import math

import numpy as np

# Keys' cubic has support [-2, 2].
KERNEL_WIDTH = 4.0


def cubic(x: np.ndarray) -> np.ndarray:
  """Keys' cubic convolution kernel with a = -0.5 (MATLAB's 'bicubic')."""
  ax = np.abs(np.asarray(x, dtype=np.float64))
  ax2, ax3 = ax * ax, ax * ax * ax
  inner = 1.5 * ax3 - 2.5 * ax2 + 1.0
  outer = -0.5 * ax3 + 2.5 * ax2 - 4.0 * ax + 2.0
  return np.where(ax <= 1.0, inner, np.where(ax <= 2.0, outer, 0.0))


def contributions(in_length: int, out_length: int, scale: float,
                  antialiasing: bool = True) -> tuple[np.ndarray, np.ndarray]:
  """Per-output taps along one axis: (weights, indices), both (out_length, P).

  `indices` are 0-based input positions already folded into [0, in_length) by
  symmetric extension; each row of `weights` sums to one. A tap folded onto the
  same input pixel twice keeps both entries (they add up when applied).
  """
  if scale < 1 and antialiasing:
    kernel = lambda t: scale * cubic(scale * t)
    width = KERNEL_WIDTH / scale
  else:
    kernel = cubic
    width = KERNEL_WIDTH
  # MATLAB's 1-based geometry, kept verbatim so sample positions match exactly.
  x = np.arange(1, out_length + 1, dtype=np.float64)
  u = x / scale + 0.5 * (1.0 - 1.0 / scale)
  left = np.floor(u - width / 2.0)
  taps = int(math.ceil(width)) + 2
  indices = left[:, None] + np.arange(taps, dtype=np.float64)[None, :]
  weights = kernel(u[:, None] - indices)
  weights = weights / weights.sum(axis=1, keepdims=True)
  # Symmetric extension: the sequence 1..n, n..1 repeats with period 2n.
  period = 2 * in_length
  folded = np.mod(indices.astype(np.int64) - 1, period)
  folded = np.where(folded < in_length, folded, period - 1 - folded)
  return weights, folded


def resize_matrix(in_length: int, out_length: int, scale: float,
                  antialiasing: bool = True) -> np.ndarray:
  """Dense (out_length, in_length) matrix applying `contributions` as one matmul.

  Dense is fine here: even a 2040-pixel axis gives a few MB, and a BLAS matmul
  beats gathering P shifted copies of the image.
  """
  weights, indices = contributions(in_length, out_length, scale, antialiasing)
  matrix = np.zeros((out_length, in_length), dtype=np.float64)
  rows = np.broadcast_to(np.arange(out_length)[:, None], indices.shape)
  np.add.at(matrix, (rows, indices), weights)
  return matrix


def round_uint8(x: np.ndarray) -> np.ndarray:
  """MATLAB's double -> uint8 cast: saturate, then round half away from zero."""
  return np.floor(np.clip(x, 0.0, 255.0) + 0.5).astype(np.uint8)


def output_size(in_length: int, scale: float) -> int:
  return int(math.ceil(in_length * scale))


def imresize(img: np.ndarray, scale: float, antialiasing: bool = True) -> np.ndarray:
  """Bicubic resize of an HxW or HxWxC image by `scale`, exactly like MATLAB.

  Returns uint8 for uint8 input (MATLAB rounding and saturation after each
  pass), float64 for any other input (no rounding, no clipping).
  """
  img = np.asarray(img)
  if img.ndim not in (2, 3):
    raise ValueError(f'imresize expects an HxW or HxWxC image, got shape {img.shape}')
  if not scale > 0 or not math.isfinite(scale):
    raise ValueError(f'imresize scale must be a positive finite number, got {scale}')
  is_uint8 = img.dtype == np.uint8
  if not is_uint8 and not (np.issubdtype(img.dtype, np.floating)
                           or np.issubdtype(img.dtype, np.integer)):
    raise ValueError(f'imresize expects uint8 or float input, got dtype {img.dtype}')
  height, width = img.shape[:2]
  out_h, out_w = output_size(height, scale), output_size(width, scale)
  if min(height, width, out_h, out_w) < 1:
    raise ValueError(f'imresize cannot resize shape {img.shape} by {scale}')
  out = img.astype(np.float64)
  rows = resize_matrix(height, out_h, scale, antialiasing)
  out = np.tensordot(rows, out, axes=(1, 0))
  if is_uint8:
    out = round_uint8(out).astype(np.float64)
  cols = resize_matrix(width, out_w, scale, antialiasing)
  # Contract the width axis, then move the new width back to axis 1.
  out = np.moveaxis(np.tensordot(cols, out, axes=(1, 1)), 0, 1)
  return round_uint8(out) if is_uint8 else out
