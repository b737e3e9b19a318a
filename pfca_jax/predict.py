"""Prediction with a trained run: `python -m pfca_jax.predict classify|upscale --workdir=DIR ...`.

    python -m pfca_jax.predict classify --workdir=runs/c100 photo.jpg [more.png ...] [--top=5]
    python -m pfca_jax.predict upscale --workdir=runs/sr_x4 photo.png photo_x4.png [--tile=160 --overlap=40]

The model is rebuilt from WORKDIR/config.json and only its parameters and BatchNorm statistics are
read from the newest readable checkpoint (`pfca_jax.run_folder`), so neither the training data nor the optimiser state is needed, and
a run trained on many devices predicts on one. Classification preprocesses each image exactly as
evaluation does. Upscaling computes what evaluation computes (`pfca_jax.tasks.tiling.Upscaler`): the
residual body, where the attention is, on the whole image, the upsampling tail in overlapping tiles,
with a progress bar over the tiles; above 2048 x 2048 pixels the whole network goes in tiles, with a note.

Everything a user can get wrong (a missing, unreadable or damaged image, one above 8192 x 8192 pixels,
an output path that cannot be written, a workdir that is not a run of the right task or has no
checkpoint, bad tile sizes) is checked before the model is loaded and ends with one `error: ...` line
on stderr and exit status 2. Conversions of the input (16-bit, grayscale, alpha, ...) are told in
`note: ...` lines on stderr; results go to stdout.
TensorFlow is imported only by `classify` (its evaluation preprocessing), so `upscale` starts fast.
"""

import contextlib
import json
import os
import re
import sys

import numpy as np

from pfca_jax import image_io, run_folder
from pfca_jax.cli import runner
from pfca_jax.errors import UserError

def note(text: str) -> None:
  print(f'note: {text}', file=sys.stderr, flush=True)


# --- The model --------------------------------------------------------------------------------------


def make_forward(model, variables):
  """A jitted inference pass: numpy NHWC float32 batch -> numpy outputs."""
  import jax
  forward = jax.jit(lambda v, x: model.apply(v, x, train=False))
  return lambda x: np.asarray(forward(variables, x))


# --- classify --------------------------------------------------------------------------------------


def class_names(config, spec) -> list[str]:
  """The spec's names, else those of the prepared TFDS metadata, else 'class N'."""
  names = getattr(spec, 'label_names', None)
  if names is None:
    try:
      import tensorflow_datasets as tfds
      builder = tfds.builder(spec.tfds_name, data_dir=config.data_dir, try_gcs=False)
      if builder.is_prepared():
        names = builder.info.features['label'].names
    except Exception:  # noqa: BLE001 -- names are a nicety: any failure falls back to numbers.
      names = None
  if names is None or len(names) != spec.num_classes:
    return [f'class {i}' for i in range(spec.num_classes)]
  return list(names)


def takes_any_size(spec, config, shape) -> bool:
  """Whether the evaluation preprocessing accepts an image of `shape` (CIFAR's never resizes: only its own size).

  Decided by tracing it on a decoded image of that static shape, which fails at once on a shape it
  would reject, rather than by running it: a failing run also logs TensorFlow warnings on stderr.
  """
  tf = image_io.import_tensorflow()
  try:
    tf.function(lambda image: spec.eval_preprocess(image, config)).get_concrete_function(
        tf.TensorSpec(shape, tf.uint8))
    return True
  except ValueError:
    return False


def preprocess(rgb: np.ndarray, config, spec, name: str = 'image', notes: list[str] | None = None) -> np.ndarray:
  """The float32 (S, S, 3) network input of a uint8 RGB image, by the dataset's evaluation preprocessing.

  An image that preprocessing only takes at the training size is first resized (PIL bicubic), which
  is told in `notes` when given.
  """
  tf = image_io.import_tensorflow()
  from pfca_jax.data import preprocessing
  if not takes_any_size(spec, config, rgb.shape):
    from PIL import Image
    size = config.image_size
    if notes is not None:
      notes.append(f'{name} is {rgb.shape[1]}x{rgb.shape[0]}; {config.dataset} takes {size}x{size} images only, '
                   'so it is resized to that (bicubic)')
    rgb = np.asarray(Image.fromarray(rgb).resize((size, size), Image.Resampling.BICUBIC))
  # Encoded, as evaluation reads its examples (the spec's decode is part of its preprocessing).
  image = spec.eval_preprocess(tf.constant(image_io.encode_png(rgb)), config)
  return preprocessing.normalize(image, spec.mean, spec.std).numpy()


def top_classes(probabilities: np.ndarray, names: list[str], k: int) -> list[tuple[str, float]]:
  """The k most probable (name, probability), most probable first (ties: lower class index first)."""
  order = np.argsort(-probabilities, kind='stable')[:k]
  return [(names[i], float(probabilities[i])) for i in order]


@contextlib.contextmanager
def config_fields(workdir: str):
  """A field that config.json lacks (a hand-edited or cut-short file) as one line, not a traceback."""
  try:
    yield
  except (KeyError, AttributeError) as e:
    field = (re.findall(r'\w+', str(e)) or ['?'])[0]  # ml_collections quotes the name, with a hint after it.
    raise UserError(f'{os.path.join(workdir, "config.json")} has no field {field!r}, which rebuilding the model '
                    'needs: it is not the whole config of a pfca_jax.main run') from None


def classify(args) -> None:
  if args.top < 1:
    raise UserError(f'--top={args.top} must be at least 1')
  for path in args.images:
    image_io.check_input(path)
  images = [image_io.read_image(path) for path in args.images]  # Decoded first: a damaged file costs no model.
  config = run_folder.open_run(args.workdir, 'classification')
  image_io.import_tensorflow()  # Before pfca_jax.data, so that its import is silent too.
  from pfca_jax.data.classification import get_spec
  inputs, notes = [], []
  with config_fields(args.workdir):
    spec = get_spec(config.dataset)
    for path, image in zip(args.images, images):
      notes += image.notes
      if image.alpha is not None:
        notes.append(f'{path} has an alpha channel; it is ignored (the classifier sees the RGB values)')
      inputs.append(preprocess(image.rgb, config, spec, path, notes))
    model = run_folder.create_model(config, spec)
  for text in notes:  # Only once every image could be read: a failure is then the one line printed.
    note(text)
  forward = make_forward(model, run_folder.restore_variables(args.workdir, model, (1, *inputs[0].shape),
                                                               run_folder.uses_average(config)))
  import jax
  names = class_names(config, spec)
  k = min(args.top, spec.num_classes)
  for path, x in zip(args.images, inputs):
    probabilities = np.asarray(jax.nn.softmax(forward(x[None])[0].astype(np.float32)), np.float64)
    print(f'{path}:')
    for rank, (name, p) in enumerate(top_classes(probabilities, names, k), 1):
      print(f'  {rank}. {p:.4f}  {name}')
  sys.stdout.flush()


# --- upscale ---------------------------------------------------------------------------------------


class TileProgress:
  """tiling.upscale's progress(done, total) callback, drawn with pfca_jax.train.progress once the total is known."""

  def __init__(self, desc: str, stream=None, bar: bool | None = None):
    self.desc, self.stream, self.use_bar, self.bar = desc, stream or sys.stderr, bar, None

  def __call__(self, done: int, total: int) -> None:
    if self.bar is None:
      from pfca_jax.train.progress import Progress
      # Started after the first batch, which compiles: rate and ETA are then those of the steady state.
      self.bar = Progress(total, self.desc, 'tiles', initial=done, stream=self.stream, bar=self.use_bar,
                          interval=10.0)
    else:
      self.bar.update(done - self.bar.done)

  def close(self) -> None:
    if self.bar is not None:
      self.bar.close()


def upscale_image(upscaler, rgb: np.ndarray, progress=None) -> np.ndarray:
  """The uint8 (scale*H, scale*W, 3) super-resolution of a uint8 RGB image by a `tiling.Upscaler`."""
  from pfca_jax.tasks import tiling
  return tiling.to_uint8(upscaler(rgb.astype(np.float32) / 255.0, progress=progress))


def upscale(args) -> None:
  image_io.check_input(args.input)
  _, stores_alpha = image_io.check_output(args.output)
  image = image_io.read_image(args.input)  # Decoded first: a damaged file costs no model.
  config = run_folder.open_run(args.workdir, 'super_resolution')
  from pfca_jax.tasks import tiling
  with config_fields(args.workdir):
    tile = config.eval_tile if args.tile is None else args.tile
    overlap = config.eval_tile_overlap if args.overlap is None else args.overlap
    try:
      tiling.check_upscale_tiles(tile, overlap)
    except ValueError:
      raise UserError(f'--tile={tile} --overlap={overlap}: need 0 <= overlap < tile / 2 and '
                      f'tile > {2 * tiling.RECONSTRUCT_RADIUS} (the run evaluated with --tile={config.eval_tile} '
                      f'--overlap={config.eval_tile_overlap})') from None
    model = run_folder.create_model(config)
  for text in image.notes:
    note(text)
  if image.alpha is not None:
    note(f'{args.input} has an alpha channel; the RGB goes through the model, the alpha is upscaled bicubically'
         if stores_alpha else
         f'{args.input} has an alpha channel, which {os.path.splitext(args.output)[1]} files cannot store; dropped')
  upscaler = tiling.Upscaler(model, tile=tile, overlap=overlap)
  upscaler.use(run_folder.restore_variables(args.workdir, model, (1, tile, tile, 3),
                                            run_folder.uses_average(config)))
  height, width = image.rgb.shape[:2]
  if upscaler.goes_in_tiles(height, width):
    note(f'{args.input} is {width}x{height}, above {upscaler.max_whole_pixels:,} pixels: the whole network goes in '
         f'tiles (--tile={tile} --overlap={overlap}), where an attention sees each tile\'s statistics, not the image\'s')
  progress = TileProgress(f'upscale x{config.scale}')
  try:
    sr = upscale_image(upscaler, image.rgb, progress=progress)
  finally:
    progress.close()
  alpha = None
  if image.alpha is not None and stores_alpha:
    from pfca_jax.imresize import imresize
    alpha = imresize(image.alpha[..., None], config.scale)[..., 0]
  image_io.write_image(args.output, sr, alpha)
  print(f'{args.output}: {sr.shape[1]}x{sr.shape[0]} (x{config.scale} of {width}x{height})', flush=True)


# --- command line ----------------------------------------------------------------------------------


def parser() -> runner.Parser:
  main_parser = runner.Parser('python -m pfca_jax.predict', '\n\n'.join(__doc__.split('\n\n')[:2]))
  commands = main_parser.add_subcommands()
  c = commands.add_parser('classify', help='Top classes of each image, by a classification run.')
  c.add_argument('--workdir', required=True, help='Folder of a classification training run.')
  c.add_argument('images', nargs='+', metavar='IMAGE', help='Image files (PNG, JPEG, TIFF, BMP, ...).')
  c.add_argument('--top', type=int, default=5, help='How many classes to print per image (default 5).')
  u = commands.add_parser('upscale', help='Super-resolve an image, by a super-resolution run.')
  u.add_argument('--workdir', required=True, help='Folder of a super-resolution training run.')
  u.add_argument('input', metavar='IN', help='Image file to upscale.')
  u.add_argument('output', metavar='OUT',
                 help=f'Result; its extension gives the format: {", ".join(image_io.OUTPUT_FORMATS)}.')
  u.add_argument('--tile', type=int, default=None, help="LR side of the tiles (default: the run's eval_tile).")
  u.add_argument('--overlap', type=int, default=None,
                 help="LR context discarded at inner tile edges when a very large image goes through the whole "
                      "network in tiles (default: the run's eval_tile_overlap).")
  return main_parser


def main(argv: list[str] | None = None) -> int:
  """The command's exit status: 0, or 2 after one `error: ...` line (also when called from Python)."""
  return runner.run(_predict, argv)


def _predict(argv: list[str] | None) -> None:
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
  args = parser().parse_args(argv)
  from absl import logging
  from pfca_jax.cli import command
  # Orbax's lines are not the user's business: a checkpoint that cannot be read is said by us, in one line.
  logging.set_verbosity(logging.FATAL)
  command.quiet_closed_event_loops()
  (classify if args.command == 'classify' else upscale)(args)


if __name__ == '__main__':
  sys.exit(main())
