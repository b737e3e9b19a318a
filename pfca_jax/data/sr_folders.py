"""Super-resolution benchmark folders (Set5, Set14, B100, Urban100, Manga109): HR images, LR given or made.

Kept free of TensorFlow: evaluating on a folder of images needs only PIL and numpy.
The conventions are BasicSR's (docs/training.md, "Super-resolution evaluation"): HR is mod-cropped to a
multiple of the scale, so that HR is exactly scale x LR and the border crop of
the metrics lines up.
"""

import os
from typing import Callable, Iterator

import numpy as np

from pfca_jax import image_io
from pfca_jax.errors import UserError
from pfca_jax.metrics import SSIM_WINDOW

IMAGE_EXTENSIONS = ('.png', '.jpg', '.jpeg', '.bmp', '.tif', '.tiff')

Pair = dict  # {'lr': uint8 HxWx3, 'hr': uint8 (sH)x(sW)x3, 'name': str}


def mod_crop(image: np.ndarray, scale: int) -> np.ndarray:
  """The top-left part of `image` whose height and width are multiples of `scale` (BasicSR's mod_crop)."""
  height, width = image.shape[0] - image.shape[0] % scale, image.shape[1] - image.shape[1] % scale
  return image[:height, :width]


def crop_pair(lr: np.ndarray, hr: np.ndarray, scale: int, name: str) -> Pair:
  """Mod-crops HR and crops LR to HR / scale, failing when LR is smaller than that.

  DIV2K's and BasicSR's LR images are floor(HR / scale) a side, so after the
  mod-crop they match exactly; a larger LR (some datasets round up) is cropped
  the same top-left way.
  """
  hr = mod_crop(hr, scale)
  lr_height, lr_width = hr.shape[0] // scale, hr.shape[1] // scale
  if lr.shape[0] < lr_height or lr.shape[1] < lr_width:
    raise ValueError(f'{name}: LR image is {lr.shape[1]}x{lr.shape[0]} (WxH) but the mod-cropped HR image is '
                     f'{hr.shape[1]}x{hr.shape[0]}, which needs LR {lr_width}x{lr_height} at scale {scale}')
  return {'lr': lr[:lr_height, :lr_width], 'hr': hr, 'name': name}


def read_rgb(path: str) -> np.ndarray:
  """uint8 HxWx3 (pfca_jax.image_io): 16-bit scaled by 1/257, grey repeated to 3 channels, alpha dropped."""
  return image_io.read_image(path).rgb


def _image_files(directory: str) -> list[str]:
  if not os.path.isdir(directory):
    raise UserError(f"image folder '{directory}' does not exist or is not a folder")
  names = sorted(n for n in os.listdir(directory)
                 if n.lower().endswith(IMAGE_EXTENSIONS) and os.path.isfile(os.path.join(directory, n)))
  if not names:
    raise UserError(f"image folder '{directory}' has no images; it must hold {'/'.join(IMAGE_EXTENSIONS)} files")
  return names


def _lr_file(lr_files: dict[str, str], stem: str, scale: int, lr_dir: str) -> str:
  """The LR file of an HR stem: same stem, or BasicSR's 'NAMEx4' naming."""
  for candidate in (stem, f'{stem}x{scale}', f'{stem}X{scale}'):
    if candidate in lr_files:
      return lr_files[candidate]
  raise UserError(f"no LR image for HR image '{stem}' in '{lr_dir}': each HR image needs an LR image named "
                  f'{stem}.* or {stem}x{scale}.*')


def _lr_names(hr_names: list[str], lr_dir: str, scale: int) -> list[str]:
  """The LR file of each HR file, in order; a one-line error for the first HR file that has none."""
  lr_files = {}
  for name in _image_files(lr_dir):
    lr_files.setdefault(os.path.splitext(name)[0], name)
  return [_lr_file(lr_files, os.path.splitext(n)[0], scale, lr_dir) for n in hr_names]


def _size_mismatch(lr_name: str, lr_dir: str, lr_size: tuple[int, int], hr_name: str, hr_size: tuple[int, int],
                   scale: int) -> UserError:
  """lr_size is (width, height); hr_size that of the mod-cropped HR image."""
  return UserError(f"LR image {lr_name} in '{lr_dir}' is {lr_size[0]}x{lr_size[1]} (WxH), but the mod-cropped HR "
                   f'{hr_name} is {hr_size[0]}x{hr_size[1]}: the LR image must be exactly '
                   f'{hr_size[0] // scale}x{hr_size[1] // scale} at scale {scale}')


def check_folder(hr_dir: str, scale: int, *, lr_dir: str | None = None) -> int:
  """Whether a benchmark set can be scored, from file listings and image headers only; returns its image count.

  What `folder_images` would otherwise find part-way through an evaluation, hours into a run: a folder
  with no images, an HR image without its LR image, a file that is not an image, an LR image that is
  not HR / scale, an HR image too small to score (SSIM needs an 11x11 window after the `scale`-pixel
  border crop).
  """
  hr_names = _image_files(hr_dir)
  lr_names = _lr_names(hr_names, lr_dir, scale) if lr_dir else None
  smallest = 2 * scale + SSIM_WINDOW
  for index, hr_name in enumerate(hr_names):
    width, height = image_io.image_size(os.path.join(hr_dir, hr_name))
    width, height = width - width % scale, height - height % scale  # The mod-crop.
    if min(width, height) < smallest:
      raise UserError(f"HR image {hr_name} in '{hr_dir}' is {width}x{height} after the mod-crop to a multiple of "
                      f'{scale}; scoring needs at least {smallest}x{smallest}')
    if lr_names is not None:
      lr_size = image_io.image_size(os.path.join(lr_dir, lr_names[index]))
      if lr_size != (width // scale, height // scale):
        raise _size_mismatch(lr_names[index], lr_dir, lr_size, hr_name, (width, height), scale)
  return len(hr_names)


def folder_images(hr_dir: str, scale: int, *, lr_dir: str | None = None,
                  downscale: Callable[[np.ndarray, float], np.ndarray] | None = None) -> Iterator[Pair]:
  """Benchmark pairs {'lr', 'hr', 'name'} from the images of `hr_dir`, sorted by file name.

  LR images come from `lr_dir` when given (matched by file stem), else from
  `downscale(hr, 1 / scale)` on the mod-cropped HR, which should be the
  MATLAB-compatible bicubic (pfca_jax.imresize.imresize) of the convention; its
  output is rounded and clipped to uint8 like a saved LR image.

  The folders are listed and matched before any image is read, so a missing LR
  file fails at once rather than after part of an evaluation.
  """
  if scale < 1:
    raise ValueError(f'scale must be a positive integer, got {scale}')
  if (lr_dir is None) == (downscale is None):
    raise ValueError('Pass exactly one of lr_dir (LR images on disk) and downscale (to make them from HR)')
  hr_names = _image_files(hr_dir)
  lr_names = _lr_names(hr_names, lr_dir, scale) if lr_dir is not None else None
  return _pairs(hr_dir, hr_names, lr_dir, lr_names, scale, downscale)


def _pairs(hr_dir, hr_names, lr_dir, lr_names, scale, downscale) -> Iterator[Pair]:
  for index, hr_name in enumerate(hr_names):
    name = os.path.splitext(hr_name)[0]
    hr = mod_crop(read_rgb(os.path.join(hr_dir, hr_name)), scale)
    if lr_names is not None:
      lr = read_rgb(os.path.join(lr_dir, lr_names[index]))
      if lr.shape[:2] != (hr.shape[0] // scale, hr.shape[1] // scale):
        raise _size_mismatch(lr_names[index], lr_dir, (lr.shape[1], lr.shape[0]), hr_name, (hr.shape[1], hr.shape[0]),
                             scale)
    else:
      lr = np.asarray(downscale(hr, 1 / scale))
      if lr.shape != (hr.shape[0] // scale, hr.shape[1] // scale, 3):
        raise ValueError(f'downscale gave a {lr.shape} image for the {hr.shape} HR {hr_name} at scale {scale}')
      if lr.dtype != np.uint8:
        # Saturate, then round half away from zero: MATLAB's cast to uint8, as when the LR image is saved.
        lr = np.floor(np.clip(lr, 0, 255) + 0.5).astype(np.uint8)
    yield {'lr': lr, 'hr': hr, 'name': name}
