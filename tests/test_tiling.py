"""Super-resolution in tiles: the Upscaler (body whole, tail tiled) equals whole-image inference for every
attention; whole-network tiles do when the overlap covers the receptive field and there is no attention."""

import jax
import numpy as np
import pytest
from conftest import plain_kaiming

from pfca_jax import models
from pfca_jax.tasks import tiling


def small_model(attention='none', scale=2):
  model = models.create('msrresnet', scale=scale, num_feat=16, num_block=2, attention=attention)
  variables = model.init(jax.random.key(0), np.zeros((1, 8, 8, 3), np.float32))
  return model, plain_kaiming(variables)  # At BasicSR's init the branch is too small to show seams.


def small_sr(attention='none', scale=2):
  model, variables = small_model(attention, scale)
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


def distance_to_own_tiles(out, lr, forward, scale, tile, overlap):
  """Per HR pixel, the least |out - forward(tile)| over the tiles that hold it in their centre.

  Tiles of whole-network tiling, as tiling.py documents them: origins every tile - 2 * overlap along
  each axis, the last flush with the image's end; a tile's centre leaves out `overlap` LR pixels on each
  side that faces another tile. An output made of tile centres is 0 everywhere (to float rounding).
  """
  h, w = lr.shape[:2]
  step = tile - 2 * overlap
  origins = lambda n: sorted({*range(0, n - tile, step), n - tile})
  corners = [(y, x) for y in origins(h) for x in origins(w)]
  tiles = np.stack([lr[y:y + tile, x:x + tile] for y, x in corners])
  # In fours, padded, as tiling.upscale calls it by default: the same compiled program, no new one.
  outputs = np.concatenate([forward(np.concatenate([tiles[i:i + 4], np.zeros_like(tiles[:4])])[:4])
                            for i in range(0, len(tiles), 4)])
  best = np.full(out.shape[:2], np.inf)
  for (y, x), result in zip(corners, outputs):
    top, left = y + (y > 0) * overlap, x + (x > 0) * overlap
    bottom, right = y + tile - (y + tile < h) * overlap, x + tile - (x + tile < w) * overlap
    rows, cols = slice(top * scale, bottom * scale), slice(left * scale, right * scale)
    here = np.abs(out[rows, cols] - result[(top - y) * scale:(bottom - y) * scale,
                                           (left - x) * scale:(right - x) * scale]).max(axis=-1)
    best[rows, cols] = np.minimum(best[rows, cols], here)
  return best


def test_channel_attention_sees_each_tile_as_its_own_map():
  # PFCA's channel means are those of the tile: every pixel is its tile's own forward pass, and so
  # differs from the whole image's nearly everywhere (by far more than float rounding).
  apply_fn = small_sr('pfca')
  lr = image(50, 70, seed=2)
  tiled = tiling.upscale(apply_fn, lr, 2, tile=24, overlap=8)
  own = distance_to_own_tiles(tiled, lr, apply_fn, 2, tile=24, overlap=8)
  assert own.max() < 1e-5
  assert np.median(np.abs(tiled - apply_fn(lr[None])[0])) > 1e-3


def test_small_image_goes_through_whole():
  apply_fn = small_sr()
  lr = image(10, 30)
  np.testing.assert_array_equal(tiling.upscale(apply_fn, lr, 2, tile=24, overlap=8), apply_fn(lr[None])[0])


@pytest.mark.parametrize('kwargs', [{'overlap': 12, 'tile': 24}, {'overlap': -1}])
def test_bad_overlap(kwargs):
  with pytest.raises(ValueError, match='overlap'):
    tiling.upscale(small_sr(), image(30, 30), 2, **kwargs)


@pytest.mark.parametrize('attention, scale', [('none', 2), ('pfca', 2), ('pfca', 4), ('pfca', 3), ('se', 2),
                                              ('eca', 2), ('simam', 2)])
def test_upscaler_equals_the_whole_image_forward_pass(attention, scale):
  model, variables = small_model(attention, scale)
  lr = image(50, 70, seed=3)
  whole = np.asarray(jax.jit(model.apply)(variables, lr[None]))[0]
  calls = []
  upscaler = tiling.Upscaler(model, tile=24, overlap=8).use(variables)
  out = upscaler(lr, progress=lambda d, t: calls.append((d, t)))
  assert out.shape == whole.shape == (50 * scale, 70 * scale, 3) and upscaler.tiled_images == 0
  assert calls[-1] == (12, 12)  # 3 x 4 tiles of 24 with the tail's overlap of 2 (step 20).
  np.testing.assert_allclose(out, whole, rtol=1e-5, atol=1e-5)
  if attention == 'pfca':  # The whole network in tiles of the same size is not the trained function.
    seams = tiling.upscale(lambda x: np.asarray(jax.jit(model.apply)(variables, x)), lr, scale, tile=24, overlap=8)
    assert np.abs(seams - whole).max() > 100 * np.abs(out - whole).max()


def test_upscaler_shards_tiles_over_devices_and_takes_new_parameters():
  model, variables = small_model('pfca')
  lr = image(40, 44, seed=4)
  upscaler = tiling.Upscaler(model, tile=16, overlap=4, devices=jax.local_devices())
  assert upscaler.batch == max(4, jax.local_device_count())
  for seed in (0, 1):
    if seed:
      variables = jax.tree.map(lambda v: v * 1.1, variables)
    whole = np.asarray(jax.jit(model.apply)(variables, lr[None]))[0]
    np.testing.assert_allclose(upscaler.use(variables)(lr), whole, rtol=1e-5, atol=1e-5)


def test_upscaler_falls_back_to_whole_network_tiles_above_its_budget():
  model, variables = small_model('pfca')
  lr = image(30, 30, seed=5)
  upscaler = tiling.Upscaler(model, tile=24, overlap=8, max_whole_pixels=899).use(variables)
  out = upscaler(lr)
  assert upscaler.tiled_images == 1
  forward = lambda x: np.asarray(jax.jit(model.apply)(variables, x))
  assert distance_to_own_tiles(out, lr, forward, 2, tile=24, overlap=8).max() < 1e-5
  upscaler.max_whole_pixels = 900
  upscaler(lr)
  assert upscaler.tiled_images == 1


def test_upscaler_rejects_tiles_too_small_for_the_tail():
  model, _ = small_model()
  with pytest.raises(ValueError, match='overlap=2 must be .* less than half of tile=4'):
    tiling.Upscaler(model, tile=4, overlap=1)
