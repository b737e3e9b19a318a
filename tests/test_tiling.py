"""Tiled super-resolution equals whole-image inference when the overlap covers the receptive field."""

import jax
import numpy as np
import pytest
from conftest import plain_kaiming

from pfca_jax import models, tiling


def small_sr(attention='none'):
  model = models.create('msrresnet', scale=2, num_feat=16, num_block=2, attention=attention)
  variables = model.init(jax.random.key(0), np.zeros((1, 8, 8, 3), np.float32))
  variables = plain_kaiming(variables)  # At BasicSR's init the branch is too small to show seams.
  forward = jax.jit(lambda x: model.apply(variables, x))
  return lambda batch: np.asarray(forward(batch))


def image(h, w, seed=0):
  return np.random.default_rng(seed).uniform(size=(h, w, 3)).astype(np.float32)


def test_tiled_equals_whole_with_enough_overlap():
  # Receptive radius here: conv_first, 2 blocks x 2 convs and upconv1 at LR (6 px), then conv_hr and
  # conv_last at HR (1 LR px): overlap 8 covers it, so every kept pixel saw all its context.
  apply_fn = small_sr()
  lr = image(50, 70)
  calls = []
  tiled = tiling.upscale(apply_fn, lr, 2, tile=24, overlap=8, batch=3, progress=lambda d, t: calls.append((d, t)))
  whole = apply_fn(lr[None])[0]
  assert tiled.shape == whole.shape == (100, 140, 3)
  np.testing.assert_allclose(tiled, whole, rtol=1e-5, atol=1e-5)
  assert calls[-1][0] == calls[-1][1] and len(calls) == -(-calls[-1][1] // 3)


def test_too_little_overlap_shows_seams():
  apply_fn = small_sr()
  lr = image(50, 70, seed=1)
  tiled = tiling.upscale(apply_fn, lr, 2, tile=24, overlap=0)
  assert np.abs(tiled - apply_fn(lr[None])[0]).max() > 1e-3


def test_channel_attention_sees_each_tile_as_its_own_map():
  # PFCA's channel means are those of the tile, so even a generous overlap leaves a (small) difference.
  apply_fn = small_sr('pfca')
  lr = image(50, 70, seed=2)
  diff = np.abs(tiling.upscale(apply_fn, lr, 2, tile=24, overlap=8) - apply_fn(lr[None])[0])
  assert 0 < diff.max() < 0.5


def test_small_image_goes_through_whole():
  apply_fn = small_sr()
  lr = image(10, 30)
  np.testing.assert_array_equal(tiling.upscale(apply_fn, lr, 2, tile=24, overlap=8), apply_fn(lr[None])[0])


@pytest.mark.parametrize('kwargs', [{'overlap': 12, 'tile': 24}, {'overlap': -1}])
def test_bad_overlap(kwargs):
  with pytest.raises(ValueError, match='overlap'):
    tiling.upscale(small_sr(), image(30, 30), 2, **kwargs)
