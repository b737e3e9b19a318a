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
    raise ValueError(f"Image folder '{directory}' does not exist")
  names = sorted(n for n in os.listdir(directory)
                 if n.lower().endswith(IMAGE_EXTENSIONS) and os.path.isfile(os.path.join(directory, n)))
  if not names:
    raise ValueError(f"Image folder '{directory}' has no {'/'.join(IMAGE_EXTENSIONS)} images")
  return names


def _lr_file(lr_files: dict[str, str], stem: str, scale: int, lr_dir: str) -> str:
  """The LR file of an HR stem: same stem, or BasicSR's 'NAMEx4' naming."""
  for candidate in (stem, f'{stem}x{scale}', f'{stem}X{scale}'):
    if candidate in lr_files:
      return lr_files[candidate]
  raise ValueError(f"No LR image for '{stem}' in '{lr_dir}' (looked for {stem}.*, {stem}x{scale}.*)")


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
  if lr_dir is not None:
    lr_files = {}
    for name in _image_files(lr_dir):
      lr_files.setdefault(os.path.splitext(name)[0], name)
    lr_names = [_lr_file(lr_files, os.path.splitext(n)[0], scale, lr_dir) for n in hr_names]
  return _pairs(hr_dir, hr_names, lr_dir, lr_names if lr_dir is not None else None, scale, downscale)


def _pairs(hr_dir, hr_names, lr_dir, lr_names, scale, downscale) -> Iterator[Pair]:
  for index, hr_name in enumerate(hr_names):
    name = os.path.splitext(hr_name)[0]
    hr = mod_crop(read_rgb(os.path.join(hr_dir, hr_name)), scale)
    if lr_names is not None:
      lr = read_rgb(os.path.join(lr_dir, lr_names[index]))
      if lr.shape[:2] != (hr.shape[0] // scale, hr.shape[1] // scale):
        raise ValueError(f"{lr_names[index]} in '{lr_dir}' is {lr.shape[1]}x{lr.shape[0]} (WxH), but the mod-cropped "
                         f'HR {hr_name} is {hr.shape[1]}x{hr.shape[0]}: expected LR x {scale} == HR')
    else:
      lr = np.asarray(downscale(hr, 1 / scale))
      if lr.shape != (hr.shape[0] // scale, hr.shape[1] // scale, 3):
        raise ValueError(f'downscale gave a {lr.shape} image for the {hr.shape} HR {hr_name} at scale {scale}')
      if lr.dtype != np.uint8:
        # Saturate, then round half away from zero: MATLAB's cast to uint8, as when the LR image is saved.
        lr = np.floor(np.clip(lr, 0, 255) + 0.5).astype(np.uint8)
    yield {'lr': lr, 'hr': hr, 'name': name}
