"""Super-resolve an image of any size: the attention sees the whole image, the upsampling goes in tiles.

Channel attention (PFCA, SE, ECA) averages each channel over the whole feature map it is given, and
SimAM over each channel's pixels: run on a tile instead of the image, every one of them computes a
slightly different function. In MSRResNet every attention sits in the residual body, at LR
resolution, so `Upscaler` runs the body (`MSRResNet.features`) on the whole LR image, then the
pixel-shuffle tail and bilinear skip (`MSRResNet.reconstruct`), which read at most
`RECONSTRUCT_RADIUS` LR pixels around each output pixel and hold the large HR-resolution activations,
in overlapping tiles of one fixed shape. Each tile contributes only its centre, so the result is the
whole-image forward pass up to float rounding, for every attention (tested), while the HR-side
memory stays bounded and the tiles share one compiled program. The body is compiled once per
distinct LR image shape (experiments/results/sr_eval_compile.md measures what that costs).

An image above `max_whole_pixels` LR pixels (default: 2048 x 2048, where one 64-channel float32 body
activation is 1 GiB) goes through the whole network in tiles instead, with `overlap` LR pixels of
context discarded at inner tile edges. That is exact for `none` when the overlap covers the
network's receptive radius (about 35 LR pixels for BasicSR's MSRResNet); with an attention, each tile
is then normalised by its own statistics, a small difference everywhere. `Upscaler.tiled_images`
counts such images so that callers can say so.
"""

import functools
from typing import Callable, Sequence

import numpy as np

from pfca_jax.models.msrresnet import RECONSTRUCT_RADIUS

MAX_WHOLE_PIXELS = 2048 * 2048


def to_uint8(image: np.ndarray, rows: int = 256) -> np.ndarray:
  """A [0, 1] float image as the 8-bit image it would be saved as (x 255, rounded, clipped).

  Done in blocks of rows: a whole float64 copy of a large upscaled photo would need 8 bytes a value.
  """
  out = np.empty(image.shape, np.uint8)
  for top in range(0, image.shape[0], rows):
    block = np.asarray(image[top:top + rows], np.float64)
    out[top:top + rows] = np.clip(np.round(block * 255.0), 0, 255)
  return out


def check_tiles(tile: int, overlap: int) -> None:
  """Raises ValueError unless 0 <= overlap < tile / 2 (each tile must keep a centre)."""
  if not 0 <= 2 * overlap < tile:
    raise ValueError(f'overlap={overlap} must be >= 0 and less than half of tile={tile}')


def check_upscale_tiles(tile: int, overlap: int) -> None:
  """`check_tiles` for an Upscaler: its whole-network tiles (`overlap`) and its tail tiles (RECONSTRUCT_RADIUS)."""
  check_tiles(tile, overlap)
  check_tiles(tile, RECONSTRUCT_RADIUS)


def _starts(length: int, tile: int, step: int) -> list[int]:
  """Tile origins along one axis: every `step`, the last one flush with the end."""
  if length <= tile:
    return [0]
  starts = list(range(0, length - tile, step))
  return starts + [length - tile]


def tiled(apply_fn: Callable[..., np.ndarray], inputs: Sequence[np.ndarray], scale: int, *, tile: int,
          overlap: int, batch: int = 4, progress: Callable[[int, int], None] | None = None) -> np.ndarray:
  """The (scale*H, scale*W, C_out) output of `apply_fn` on HxW inputs, computed tile by tile.

  Args:
    apply_fn: maps one batch of tiles per input, each (batch, tile, tile, C_i) float32, to
      (batch, scale*tile, scale*tile, C_out). An image smaller than a tile in either direction goes
      through whole instead, as (1, H, W, C_i): padding it would change the output near its border.
    inputs: arrays of the same height and width (e.g. a feature map and the LR image).
    tile: LR side of each tile; overlap: LR pixels of context discarded at inner tile edges.
    batch: tiles per call of apply_fn (the last call is padded with blank tiles).
    progress: called as progress(tiles_done, tiles_total) after each batch.
  """
  check_tiles(tile, overlap)
  h, w = inputs[0].shape[:2]
  if h < tile or w < tile:
    result = np.asarray(apply_fn(*(x[None].astype(np.float32) for x in inputs)))[0]
    if progress is not None:
      progress(1, 1)
    return result
  step = tile - 2 * overlap
  origins = [(y, x) for y in _starts(h, tile, step) for x in _starts(w, tile, step)]
  out = None
  for first in range(0, len(origins), batch):
    group = origins[first:first + batch]
    tiles = [np.zeros((batch, tile, tile, x.shape[-1]), np.float32) for x in inputs]
    for i, (y, x) in enumerate(group):
      for stack, source in zip(tiles, inputs):
        stack[i] = source[y:y + tile, x:x + tile]
    results = np.asarray(apply_fn(*tiles))
    if out is None:
      out = np.zeros((h * scale, w * scale, results.shape[-1]), np.float32)
    for i, (y, x) in enumerate(group):
      # Keep the centre: drop `overlap` pixels on every side that touches another tile, not the image edge.
      top = 0 if y == 0 else overlap
      left = 0 if x == 0 else overlap
      bottom = tile if y + tile >= h else tile - overlap
      right = tile if x + tile >= w else tile - overlap
      out[(y + top) * scale:(y + bottom) * scale, (x + left) * scale:(x + right) * scale] = \
          results[i, top * scale:bottom * scale, left * scale:right * scale]
    if progress is not None:
      progress(min(first + batch, len(origins)), len(origins))
  return out


def upscale(apply_fn: Callable[[np.ndarray], np.ndarray], lr: np.ndarray, scale: int, *, tile: int = 64,
            overlap: int = 16, batch: int = 4, progress: Callable[[int, int], None] | None = None) -> np.ndarray:
  """The whole network `apply_fn` on the HxWxC image `lr`, tile by tile (`tiled` with one input)."""
  if lr.ndim != 3:
    raise ValueError(f'upscale expects an HxWxC image, got shape {lr.shape}')
  return tiled(apply_fn, [lr], scale, tile=tile, overlap=overlap, batch=batch, progress=progress)


class Upscaler:
  """MSRResNet inference on images of any size: `upscaler(lr)` -> float32 (scale*H, scale*W, 3).

  The body runs on the first of `devices`; tiles go in batches sharded over all of them. Build it
  once and give it new parameters with `use(variables)`: its compiled programs are kept.
  """

  def __init__(self, model, *, tile: int, overlap: int, devices=None, max_whole_pixels: int = MAX_WHOLE_PIXELS):
    import jax
    from pfca_jax.train import sharding
    check_upscale_tiles(tile, overlap)
    devices = list(devices or jax.local_devices()[:1])
    mesh = sharding.create_mesh(devices)
    self.scale, self.tile, self.overlap, self.max_whole_pixels = model.scale, tile, overlap, max_whole_pixels
    self.batch = -(-4 // len(devices)) * len(devices)
    self.tiled_images = 0
    self._devices, self._replicated, self._split = devices, sharding.replicated(mesh), sharding.batch_sharded(mesh)
    # Placed inputs decide where each program runs: one jitted function per method serves both placements.
    self._methods = {m: jax.jit(functools.partial(model.apply, method=m)) for m in ('features', 'reconstruct', '__call__')}
    self._variables = None

  def use(self, variables) -> 'Upscaler':
    """The parameters to upscale with, placed on the first device and on all of them; resets `tiled_images`."""
    import jax
    self.tiled_images = 0
    self._variables = {'one': jax.device_put(variables, self._devices[0]),
                       'all': jax.device_put(variables, self._replicated)}
    return self

  def _apply(self, method: str, *arrays: np.ndarray) -> np.ndarray:
    import jax
    if len(arrays[0]) % len(self._devices):  # One whole image: on the first device.
      return np.asarray(self._methods[method](self._variables['one'], *arrays))
    placed = [jax.device_put(x, self._split) for x in arrays]
    return np.asarray(self._methods[method](self._variables['all'], *placed))

  def goes_in_tiles(self, height: int, width: int) -> bool:
    """Whether an LR image of that size is above the budget and goes through the whole network in tiles."""
    return height * width > self.max_whole_pixels

  def __call__(self, lr: np.ndarray, progress: Callable[[int, int], None] | None = None) -> np.ndarray:
    if lr.ndim != 3:
      raise ValueError(f'upscale expects an HxWxC image, got shape {lr.shape}')
    lr = np.asarray(lr, np.float32)
    if self.goes_in_tiles(*lr.shape[:2]):
      self.tiled_images += 1
      return tiled(functools.partial(self._apply, '__call__'), [lr], self.scale, tile=self.tile,
                   overlap=self.overlap, batch=self.batch, progress=progress)
    feat = self._apply('features', lr[None])[0].astype(np.float32)
    return tiled(functools.partial(self._apply, 'reconstruct'), [feat, lr], self.scale, tile=self.tile,
                 overlap=RECONSTRUCT_RADIUS, batch=self.batch, progress=progress)
