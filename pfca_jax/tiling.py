"""Super-resolve an image of any size in overlapping tiles, so memory and compiled shapes stay bounded.

Every tile has the same LR shape (tile x tile) and tiles go through the model in batches of a fixed
size, so one compiled program serves every image at least a tile wide and high; a smaller image is
small enough to go through whole (padding it would change the output near its border). Each tile contributes only its centre: `overlap` LR pixels next to an inner edge are
discarded, where the tile's missing context would change the output.

Exactness: a network whose output pixel depends only on a bounded neighbourhood of the input (plain
MSRResNet: 33 LR-resolution 3x3 convolutions, a receptive radius of about 35 LR pixels) gives
exactly the whole-image result when `overlap` covers that radius. Channel attention (PFCA, SE, ECA)
averages each channel over the whole map it sees, which is the tile here: tiled and whole-image
outputs then differ slightly everywhere, by how much the tile's channel means differ from the image's.
"""

from typing import Callable

import numpy as np


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


def _starts(length: int, tile: int, step: int) -> list[int]:
  """Tile origins along one axis: every `step`, the last one flush with the end."""
  if length <= tile:
    return [0]
  starts = list(range(0, length - tile, step))
  return starts + [length - tile]


def upscale(apply_fn: Callable[[np.ndarray], np.ndarray], lr: np.ndarray, scale: int, *, tile: int = 64,
            overlap: int = 16, batch: int = 4, progress: Callable[[int, int], None] | None = None) -> np.ndarray:
  """Returns the (scale*H, scale*W, C) output of `apply_fn` on the HxWxC image `lr`, tile by tile.

  Args:
    apply_fn: maps a float32 batch (batch, tile, tile, C) to (batch, scale*tile, scale*tile, C).
    lr: the low-resolution image, float32 (whatever range apply_fn expects).
    scale: the model's upscaling factor.
    (apply_fn also receives (1, H, W, C) for an image smaller than a tile.)
    tile: LR side of each tile; overlap: LR pixels of context discarded at inner tile edges.
    batch: tiles per call of apply_fn (the last call is padded with blank tiles).
    progress: called as progress(tiles_done, tiles_total) after each batch.
  """
  if lr.ndim != 3:
    raise ValueError(f'upscale expects an HxWxC image, got shape {lr.shape}')
  check_tiles(tile, overlap)
  h, w, c = lr.shape
  if h < tile or w < tile:
    result = np.asarray(apply_fn(lr[None].astype(np.float32)))[0]
    if progress is not None:
      progress(1, 1)
    return result
  padded, ph, pw = lr, h, w
  step = tile - 2 * overlap
  origins = [(y, x) for y in _starts(ph, tile, step) for x in _starts(pw, tile, step)]
  out = np.zeros((ph * scale, pw * scale, c), np.float32)
  for first in range(0, len(origins), batch):
    group = origins[first:first + batch]
    tiles = np.zeros((batch, tile, tile, c), np.float32)
    for i, (y, x) in enumerate(group):
      tiles[i] = padded[y:y + tile, x:x + tile]
    results = np.asarray(apply_fn(tiles))
    for i, (y, x) in enumerate(group):
      # Keep the centre: drop `overlap` pixels on every side that touches another tile, not the image edge.
      top = 0 if y == 0 else overlap
      left = 0 if x == 0 else overlap
      bottom = tile if y + tile >= ph else tile - overlap
      right = tile if x + tile >= pw else tile - overlap
      out[(y + top) * scale:(y + bottom) * scale, (x + left) * scale:(x + right) * scale] = \
          results[i, top * scale:bottom * scale, left * scale:right * scale]
    if progress is not None:
      progress(min(first + batch, len(origins)), len(origins))
  return out
