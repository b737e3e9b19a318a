"""Reading any common image file as 8-bit RGB (+ alpha), and writing results, for the prediction CLI.

The models take 8-bit RGB, but photos arrive as grayscale, palette, 1-bit, CMYK, with an alpha channel
or with 16 bits per channel. Each is converted here, and the conversion is described in a note the
caller shows, so that nobody is surprised by what the model actually saw. 16-bit values v become
round(v / 257), which maps 0..65535 onto 0..255 exactly (65535 = 257 * 255).

Pillow opens 16-bit RGB(A) PNGs as 8-bit, keeping only the high byte of each value, and cannot hold
16-bit colour at all; those files are decoded with TensorFlow (PNG) or tifffile (TIFF) instead. That
is the only use of TensorFlow here, imported on demand (`import_tensorflow`, which the input pipelines
use too, for its silence), so reading an ordinary image stays fast.
Every failure is a one-line `UserError` naming the file. An input may have at most `MAX_PIXELS`
(8192 x 8192) pixels, checked from its header before anything is decoded.
"""

import contextlib
import dataclasses
import io
import os
import sys
import tempfile
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from pfca_jax.errors import UserError

# Extension -> (Pillow format, whether it stores an alpha channel), the formats written without surprises:
# GIF (256 colours) and the exotic formats Pillow also writes are left out on purpose.
OUTPUT_FORMATS = {'.png': ('PNG', True), '.jpg': ('JPEG', False), '.jpeg': ('JPEG', False), '.bmp': ('BMP', False),
                  '.tif': ('TIFF', True), '.tiff': ('TIFF', True), '.webp': ('WEBP', True), '.ppm': ('PPM', False)}
# Pillow's defaults (JPEG quality 75 with 4:2:0 chroma, lossy WebP) would blur away what super-resolution adds;
# 'exact' keeps WebP from zeroing the colour under fully transparent pixels.
_SAVE_OPTIONS = {'JPEG': {'quality': 95, 'subsampling': 0}, 'WEBP': {'lossless': True, 'exact': True}}
_TIFF_MAGIC = (b'II*\x00', b'MM\x00*', b'II+\x00', b'MM\x00+')
# The largest input, in pixels: 8192 x 8192 upscaled x4 is already a 3 GB 8-bit image, and 12 GB while in float32.
MAX_SIDE = 8192
MAX_PIXELS = MAX_SIDE * MAX_SIDE
READABLE = 'PNG, JPEG, BMP, TIFF, WebP, GIF or another format Pillow reads'
# Modes Pillow converts to RGB faithfully, named the way a person would.
_OTHER_MODES = {'CMYK': 'CMYK', 'YCbCr': 'YCbCr', 'LAB': 'CIELAB', 'HSV': 'HSV', 'RGBX': 'RGBX', 'RGBa': 'RGBa'}


@dataclasses.dataclass
class LoadedImage:
  """An input image as the models take it.

  Attributes:
    rgb: uint8 (H, W, 3).
    alpha: uint8 (H, W), or None when the file has no alpha channel.
    notes: one sentence per conversion that changed what the file holds (16-bit, grayscale, ...).
  """
  rgb: np.ndarray
  alpha: np.ndarray | None
  notes: list[str]


def to_8bit(values: np.ndarray) -> np.ndarray:
  """16-bit values -> uint8 round(v / 257); no value ever lands exactly halfway, 257 being odd."""
  return np.round(np.asarray(values, np.float64) / 257.0).astype(np.uint8)


def check_input(path: str) -> None:
  """Fails in one line unless `path` is an image file of at most MAX_PIXELS, judged from its header alone."""
  image_size(path)


def image_size(path: str) -> tuple[int, int]:
  """(width, height) of an image file from its header alone; a one-line UserError when it is not an image
  file, or is larger than MAX_PIXELS."""
  if not os.path.exists(path):
    raise UserError(f'input image {path!r} does not exist')
  if os.path.isdir(path):
    raise UserError(f'input {path!r} is a folder, not an image file')
  if os.path.getsize(path) == 0:
    raise UserError(f'input image {path!r} is an empty file (0 bytes); give an image file ({READABLE})')
  try:
    with warnings.catch_warnings():
      # Pillow warns above its own limit; ours (below) is lower and is said in the error instead.
      warnings.simplefilter('ignore', Image.DecompressionBombWarning)
      with Image.open(path) as image:
        size = image.size
  except UnidentifiedImageError:
    if not _is_tiff(path):
      raise UserError(f'input {path!r} is not an image file (its content is none of {READABLE})') from None
    size = _tiff_size(path)  # A TIFF layout Pillow does not know (float, many channels) may still be tifffile's.
  except Image.DecompressionBombError:
    raise UserError(f'input image {path!r} has more than {2 * Image.MAX_IMAGE_PIXELS:,} pixels; '
                    f'the limit is {MAX_PIXELS:,} pixels ({MAX_SIDE} x {MAX_SIDE}): crop or downscale it') from None
  except OSError as e:
    raise UserError(f'cannot read input {path!r}: {e.strerror or e}') from None
  except Exception as e:  # noqa: BLE001 -- Pillow's format plugins raise anything on a malformed header.
    raise UserError(f'input {path!r} is not a readable image ({type(e).__name__}: {e}); give an image file '
                    f'({READABLE})') from None
  width, height = size
  if width * height > MAX_PIXELS:
    raise UserError(f'input image {path!r} is {width}x{height} = {width * height:,} pixels; the limit is '
                    f'{MAX_PIXELS:,} pixels ({MAX_SIDE} x {MAX_SIDE}): crop or downscale it')
  return width, height


def read_image(path: str) -> LoadedImage:
  """Decodes `path` to 8-bit RGB and alpha, with a note for every conversion; UserError if it cannot."""
  check_input(path)
  try:
    with Image.open(path) as image:
      return _from_pil(image, path)
  except UnidentifiedImageError:
    return _from_array(_read_tiff(path), path, 'TIFF')
  except UserError:
    raise
  except Exception as e:  # noqa: BLE001 -- truncated or corrupt data shows only when decoded, as any error.
    raise UserError(f'cannot decode image {path!r}: {e}; the file is damaged or incomplete, give a whole '
                    'image file') from None


def _is_tiff(path: str) -> bool:
  with open(path, 'rb') as f:
    return f.read(4) in _TIFF_MAGIC


def _tiff_size(path: str) -> tuple[int, int]:
  import tifffile  # Only for TIFFs Pillow cannot hold.
  try:
    with tifffile.TiffFile(path) as tiff:
      shape = tiff.pages[0].shape
  except Exception as e:  # noqa: BLE001 -- tifffile raises many types for unreadable files.
    raise UserError(f'cannot read TIFF image {path!r}: {e}') from None
  return int(shape[1]), int(shape[0])


def _read_tiff(path: str) -> np.ndarray:
  import tifffile  # Only for TIFFs Pillow cannot hold.
  try:
    return tifffile.imread(path, key=0)
  except Exception as e:  # noqa: BLE001 -- tifffile raises many types for unreadable files.
    raise UserError(f'cannot decode TIFF image {path!r}: {e}') from None


def _rawmode(image: Image.Image) -> str:
  """The file's own pixel layout ('RGB;16B' for a 16-bit RGB PNG), which `mode` hides."""
  if not image.tile:
    return ''
  args = image.tile[0].args
  return args if isinstance(args, str) else str(args[0]) if args else ''


def _from_pil(image: Image.Image, path: str) -> LoadedImage:
  notes, file_format = [], image.format
  frames = getattr(image, 'n_frames', 1)
  if frames > 1:
    notes.append(f'{path} has {frames} frames; using the first')
  mode = image.mode
  if ';16' in _rawmode(image) and not mode.startswith('I'):
    # Pillow would keep only the high byte of each 16-bit colour value.
    if file_format == 'PNG':
      return _from_array(_decode_png16(path), path, 'PNG', notes)
    if file_format == 'TIFF':
      return _from_array(_read_tiff(path), path, 'TIFF', notes)
    notes.append(f'{path} has 16-bit colour, which is read as its high byte only')
  orientation = image.getexif().get(0x0112, 1)
  if orientation not in (None, 1):
    image = ImageOps.exif_transpose(image)
    notes.append(f'{path} is turned upright as its EXIF orientation ({orientation}) says')
  if mode in ('RGB', 'RGBA', 'L', 'LA'):
    return _from_array(np.asarray(image), path, file_format, notes)
  if mode == '1':
    return _from_array(np.asarray(image.convert('L')), path, file_format, notes, kind='1-bit black and white')
  if mode in ('P', 'PA'):
    has_alpha = mode == 'PA' or 'transparency' in image.info
    rgb = np.asarray(image.convert('RGBA' if has_alpha else 'RGB'))
    return _from_array(rgb, path, file_format, notes, kind='a palette image')
  if mode.startswith('I;16') or mode == 'I':
    values = np.asarray(image)
    if mode == 'I' and (values.min() < 0 or values.max() > 65535):
      raise UserError(f'{path} holds 32-bit integer pixels (values {values.min()}..{values.max()}); '
                      'supported: 8- and 16-bit images')
    return _from_array(values.astype(np.uint16), path, file_format, notes)
  if mode in _OTHER_MODES:
    with_alpha = mode == 'RGBa'
    rgb = np.asarray(image.convert('RGBA' if with_alpha else 'RGB'))
    return _from_array(rgb, path, file_format, notes, kind=_OTHER_MODES[mode])
  raise UserError(f'{path} has pixel mode {mode!r} (e.g. floating point), which is not supported; '
                  'supported: 1-bit, 8-bit and 16-bit grayscale, palette, RGB, RGBA, CMYK')


def _from_array(values: np.ndarray, path: str, file_format: str | None, notes: list[str] | None = None,
                kind: str | None = None) -> LoadedImage:
  """uint8/uint16 (H, W) or (H, W, 1-4 channels) -> LoadedImage; `kind` overrides the description."""
  notes = list(notes or [])
  if values.ndim == 2:
    values = values[..., None]
  if values.ndim != 3 or not 1 <= values.shape[-1] <= 4:
    raise UserError(f'{path} is a {file_format or "image"} of shape {values.shape}; supported: one image with '
                    '1 to 4 channels (gray, gray+alpha, RGB, RGBA)')
  if values.dtype == np.uint16:
    bits = '16-bit '
    values = to_8bit(values)
  elif values.dtype in (np.uint8, np.bool_):
    bits = ''
    values = values.astype(np.uint8) * (255 if values.dtype == np.bool_ else 1)
  else:
    raise UserError(f'{path} has {values.dtype} pixels; supported: 8- and 16-bit unsigned integers')
  channels = values.shape[-1]
  alpha = values[..., -1] if channels in (2, 4) else None
  color = values[..., :3] if channels >= 3 else np.repeat(values[..., :1], 3, axis=-1)
  described = kind or (bits + ('grayscale', 'grayscale with alpha', 'RGB', 'RGBA')[channels - 1])
  if kind or bits or channels < 3:
    notes.append(f'{path} is {described}; converted to 8-bit RGB')
  return LoadedImage(np.ascontiguousarray(color), None if alpha is None else np.ascontiguousarray(alpha), notes)


@contextlib.contextmanager
def _native_stderr_silenced():
  """TensorFlow's C++ start-up lines (oneDNN, CPU features) go to fd 2 before any log level applies."""
  sys.stderr.flush()
  saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
  try:
    os.dup2(devnull, 2)
    yield
  finally:
    os.dup2(saved, 2)
    os.close(saved)
    os.close(devnull)


class MissingTensorFlow(UserError):
  """TensorFlow or TFDS is needed (TFDS data, 16-bit PNGs) but cannot be imported."""

  def __init__(self, error: ImportError):
    super().__init__(f'TensorFlow Datasets cannot be imported ({error}): TFDS datasets and 16-bit PNGs are read '
                     f'with it; install it with `pip install {TENSORFLOW_PACKAGES}`, or train on '
                     f'config.dataset=\'synthetic\', which needs neither')


# What `pip install` needs for the TFDS pipelines, the versions of requirements.txt.
TENSORFLOW_PACKAGES = 'tensorflow-cpu==2.21.0 tensorflow-datasets==4.9.10'


def import_tensorflow():
  """TensorFlow, imported without its start-up chatter and kept off the GPUs (JAX computes; TF only reads images)."""
  if 'tensorflow' not in sys.modules:
    try:
      with _native_stderr_silenced():
        import tensorflow  # noqa: F401
    except ImportError as e:
      raise MissingTensorFlow(e) from None
  tf = sys.modules['tensorflow']
  try:
    tf.config.set_visible_devices([], 'GPU')
  except RuntimeError:  # Already initialised by its first user, who owns that choice.
    pass
  return tf


def _decode_png16(path: str) -> np.ndarray:
  tf = import_tensorflow()
  with open(path, 'rb') as f:
    data = f.read()
  try:
    return tf.io.decode_png(data, channels=0, dtype=tf.uint16).numpy()
  except tf.errors.OpError as e:
    raise UserError(f'cannot decode PNG image {path!r}: {e.message.splitlines()[0]}') from None


def encode_png(rgb: np.ndarray) -> bytes:
  """Lossless PNG bytes of a uint8 image, the fastest zlib level (it is decoded again at once)."""
  buffer = io.BytesIO()
  Image.fromarray(rgb).save(buffer, format='PNG', compress_level=1)
  return buffer.getvalue()


def check_output(path: str) -> tuple[str, bool]:
  """(Pillow format, stores alpha) for an output path that can be written; UserError otherwise."""
  if os.path.isdir(path):
    raise UserError(f'output {path!r} is a folder; give a file name, e.g. {os.path.join(path, "out.png")}')
  extension = os.path.splitext(path)[1].lower()
  if extension not in OUTPUT_FORMATS:
    raise UserError(f'output {path!r}: unsupported extension {extension or "(none)"!r}; supported: '
                    f'{", ".join(OUTPUT_FORMATS)}')
  folder = os.path.dirname(os.path.abspath(path))
  if not os.path.isdir(folder):
    raise UserError(f'output {path!r}: {folder!r} ' + ('is a file, not a folder' if os.path.exists(folder)
                                                       else 'does not exist'))
  if os.path.exists(path) and not os.access(path, os.W_OK):
    raise UserError(f'output {path!r} exists and is not writable')
  try:
    with tempfile.NamedTemporaryFile(dir=folder, prefix='.write_test_'):
      pass
  except OSError as e:
    raise UserError(f'output {path!r}: folder {folder!r} is not writable ({e.strerror or e})') from None
  return OUTPUT_FORMATS[extension]


def write_image(path: str, rgb: np.ndarray, alpha: np.ndarray | None = None) -> None:
  """Writes uint8 RGB (and alpha when given) in the format of the extension, replacing `path` only when complete."""
  file_format, stores_alpha = check_output(path)
  image = Image.fromarray(rgb)
  if alpha is not None and stores_alpha:
    image = Image.fromarray(np.dstack([rgb, alpha]))
  folder, name = os.path.split(os.path.abspath(path))
  fd, tmp = tempfile.mkstemp(dir=folder, prefix=f'.{name}.')
  try:
    with os.fdopen(fd, 'wb') as f:
      image.save(f, format=file_format, **_SAVE_OPTIONS.get(file_format, {}))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp's 0600 would make the result private to its writer.
    os.replace(tmp, path)
  except BaseException as e:
    if os.path.exists(tmp):
      os.unlink(tmp)
    if isinstance(e, OSError):
      raise UserError(f'cannot write {path!r}: {e.strerror or e}') from None
    raise
