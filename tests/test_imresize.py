"""MATLAB imresize: weights, symmetric borders against a hand computation, PIL in the interior, sizes and uint8 rounding."""

import math

import numpy as np
import pytest
import skimage.data
from PIL import Image

from pfca_jax import imresize as ir
from pfca_jax.imresize import imresize

SCALES = [1 / 4, 1 / 3, 1 / 2, 2, 3, 4]


def keys_cubic(t, a=-0.5):
  """Keys' kernel in its general-a form, written independently of the module."""
  t = np.abs(t)
  near = (a + 2) * t ** 3 - (a + 3) * t ** 2 + 1
  far = a * t ** 3 - 5 * a * t ** 2 + 8 * a * t - 4 * a
  return np.where(t <= 1, near, np.where(t < 2, far, 0.0))


def hand_resize_1d(x, scale, pad_mode):
  """1-D resize by explicit padding and 0-based pixel-centre geometry.

  Output pixel o sits at input coordinate (o + 0.5) / scale - 0.5; with
  antialiasing the kernel is stretched by 1 / scale when downscaling.
  """
  n = len(x)
  stretch = max(1.0, 1.0 / scale)
  pad = int(math.ceil(2 * stretch)) + 2
  xp = np.pad(np.asarray(x, np.float64), pad, mode=pad_mode)
  pos = np.arange(-pad, n + pad, dtype=np.float64)
  out = []
  for o in range(int(math.ceil(n * scale))):
    c = (o + 0.5) / scale - 0.5
    w = keys_cubic((c - pos) / stretch)
    out.append((w * xp).sum() / w.sum())
  return np.array(out)


@pytest.mark.parametrize('scale', SCALES + [0.3, 1.7])
@pytest.mark.parametrize('n', [1, 2, 7, 64])
def test_contribution_weights_sum_to_one_and_indices_in_range(scale, n):
  w, idx = ir.contributions(n, ir.output_size(n, scale), scale)
  np.testing.assert_allclose(w.sum(axis=1), 1.0, atol=1e-12)
  assert idx.min() >= 0 and idx.max() < n
  assert w.shape == idx.shape == (ir.output_size(n, scale), math.ceil(4 * max(1, 1 / scale)) + 2)


def test_kernel_matches_keys_a_minus_half():
  t = np.linspace(-3, 3, 601)
  np.testing.assert_allclose(ir.cubic(t), keys_cubic(t), atol=1e-15)
  assert ir.cubic(np.array([0.0]))[0] == 1.0 and ir.cubic(np.array([1.5]))[0] == pytest.approx(-0.0625)


@pytest.mark.parametrize('scale', SCALES)
@pytest.mark.parametrize('dtype', [np.uint8, np.float64])
def test_constant_images_stay_constant(scale, dtype):
  img = np.full((13, 18, 3), 137, dtype)
  out = imresize(img, scale)
  assert out.dtype == dtype
  np.testing.assert_allclose(out.astype(np.float64), 137.0, atol=1e-10)


@pytest.mark.parametrize('shape', [(17, 23, 3), (16, 24, 3), (9, 11), (1, 5, 2)])
@pytest.mark.parametrize('scale', SCALES)
def test_output_shapes(shape, scale):
  out = imresize(np.zeros(shape, np.uint8), scale)
  assert out.shape == (math.ceil(shape[0] * scale), math.ceil(shape[1] * scale)) + shape[2:]


def test_smooth_image_survives_down_then_up():
  yy, xx = np.mgrid[0:128, 0:160].astype(np.float64)
  img = 128 + 60 * np.sin(2 * np.pi * xx / 64) * np.cos(2 * np.pi * yy / 48)
  back = imresize(imresize(img, 1 / 2), 2)
  assert back.shape == img.shape
  mse = np.mean((back - img) ** 2)
  assert 10 * np.log10(255 ** 2 / mse) > 40
  # A high-frequency image must not survive: antialiasing removes it.
  checker = 128 + 100 * ((xx + yy) % 2 * 2 - 1)
  # (Interior only: mirroring breaks the checkerboard's phase at the border.)
  assert np.abs(imresize(checker, 1 / 2)[2:-2, 2:-2] - 128).max() < 1


@pytest.mark.parametrize('scale', [2, 1 / 2, 1 / 3])
def test_symmetric_border_matches_hand_computation(scale):
  x = np.array([0, 250, 10, 200, 40, 90, 30, 120, 60, 5, 250, 80, 0, 180, 35, 255, 20, 220], np.float64)
  # A 1-row image: the row pass is the identity, the column pass is the 1-D resize.
  out = imresize(x[None, :], scale)
  assert np.allclose(out, out[:1])
  got = out[0]
  np.testing.assert_allclose(got, hand_resize_1d(x, scale, 'symmetric'), atol=1e-9)
  # Replicate padding gives a visibly different border, so the check has teeth.
  edge = hand_resize_1d(x, scale, 'edge')
  assert np.abs(got - edge)[:2].max() > 1.0 and np.abs(got - edge)[-2:].max() > 1.0


@pytest.mark.parametrize('scale', [1 / 4, 1 / 3, 1 / 2, 2, 3])
def test_interior_matches_pil_bicubic(scale):
  # PIL's BICUBIC is also Keys a = -0.5 with pixel-centre alignment, widened by
  # 1/scale when downscaling and renormalised; it differs only at the border
  # (PIL drops out-of-image taps and renormalises instead of mirroring) and it
  # stores mode 'F' in float32. Sizes divisible by 1/scale make PIL's size
  # ratio equal to the scale MATLAB uses to place samples.
  plane = skimage.data.astronaut()[:384, :312, 1].astype(np.float32)
  h, w = plane.shape
  oh, ow = ir.output_size(h, scale), ir.output_size(w, scale)
  assert oh * 1.0 / h == pytest.approx(scale) and ow * 1.0 / w == pytest.approx(scale)
  pil = np.asarray(Image.fromarray(plane, 'F').resize((ow, oh), Image.BICUBIC), np.float64)
  ours = imresize(plane.astype(np.float64), scale)
  b = math.ceil(2 * max(1, scale)) + 2  # output pixels whose taps can reach the border
  np.testing.assert_allclose(ours[b:-b, b:-b], pil[b:-b, b:-b], atol=1e-3)
  assert np.abs(ours - pil).max() > 0.1  # the borders do differ


def test_uint8_output_is_saturated_and_rounded_half_up():
  np.testing.assert_array_equal(ir.round_uint8(np.array([0.5, 1.5, 2.5, 2.49, -3.0, 300.0, 254.6])),
                                [1, 2, 3, 2, 0, 255, 255])
  # A hard 0/255 step rings past [0, 255] under bicubic upscaling: it must
  # saturate, not wrap around.
  step = np.zeros((1, 16), np.uint8)
  step[:, 8:] = 255
  as_float = imresize(step.astype(np.float64), 4)
  assert as_float.min() < -1 and as_float.max() > 256
  out = imresize(step, 4)
  assert out.dtype == np.uint8
  # One row: the row pass is exact, so the only rounding is of the column pass.
  np.testing.assert_array_equal(out, np.floor(np.clip(as_float, 0, 255) + 0.5).astype(np.uint8))
  assert np.any(np.floor(np.clip(as_float, 0, 255)) != out)  # truncation would fail


def test_uint8_photo_stays_close_to_float_resize():
  img = skimage.data.coffee()[:200, :300]
  for scale in (1 / 4, 3):
    u8 = imresize(img, scale)
    fl = imresize(img.astype(np.float64), scale)
    assert u8.dtype == np.uint8 and fl.dtype == np.float64
    diff = np.abs(u8 - np.clip(fl, 0, 255))
    # Rounding after each of the two passes moves a value by about 1 at most;
    # the rare larger gaps are MATLAB's saturation of the first pass's
    # overshoot at hard edges, which the float path keeps.
    assert (diff <= 1).mean() > 0.999 and diff.max() < 8


def test_bad_input_raises():
  with pytest.raises(ValueError, match='HxW'):
    imresize(np.zeros((2, 3, 4, 5)), 2)
  with pytest.raises(ValueError, match='scale'):
    imresize(np.zeros((4, 4)), 0)
