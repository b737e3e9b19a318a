"""Prediction with a trained run: `python -m pfca_jax.predict classify|upscale --workdir=DIR ...`.

    python -m pfca_jax.predict classify --workdir=runs/c100 photo.jpg [more.png ...] [--top=5]
    python -m pfca_jax.predict upscale --workdir=runs/sr_x4 photo.png photo_x4.png [--tile=160 --overlap=40]

The model is rebuilt from WORKDIR/config.json and only its parameters and BatchNorm statistics are
read from the latest checkpoint, so neither the training data nor the optimiser state is needed, and
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

import argparse
import contextlib
import json
import os
import re
import sys

import numpy as np

from pfca_jax import image_io
from pfca_jax.errors import UserError

TASK_COMMANDS = {'classification': 'classify', 'super_resolution': 'upscale'}


def note(text: str) -> None:
  print(f'note: {text}', file=sys.stderr, flush=True)


# --- The run: config, model, parameters ------------------------------------------------------------


def checkpoint_steps(workdir: str) -> list[int]:
  """Steps of the complete checkpoints in WORKDIR/checkpoints (orbax renames a folder to its step when done)."""
  directory = os.path.join(workdir, 'checkpoints')
  if not os.path.isdir(directory):
    return []
  return sorted(int(name) for name in os.listdir(directory)
                if name.isdigit() and os.path.isdir(os.path.join(directory, name)))


def open_run(workdir: str, task: str | None = None):
  """The ConfigDict of a training workdir of `task` (None: either task) that holds a checkpoint, or a one-line
  UserError."""
  if not workdir:
    raise UserError('--workdir is required: the folder of a training run (with config.json and checkpoints/)')
  if not os.path.isdir(workdir):
    raise UserError(f'workdir {workdir!r} does not exist' if not os.path.exists(workdir)
                    else f'workdir {workdir!r} is not a folder')
  path = os.path.join(workdir, 'config.json')
  if not os.path.isfile(path):
    # A comparison (config.compare_attentions) keeps one run per attention in WORKDIR/<attention>/.
    runs = sorted(os.path.join(workdir, name) for name in os.listdir(workdir)
                  if os.path.isfile(os.path.join(workdir, name, 'config.json')))
    if runs:
      raise UserError(f'workdir {workdir!r} has no config.json but holds the runs {", ".join(runs)}: '
                      'pass one of them as --workdir')
    raise UserError(f'workdir {workdir!r} has no config.json: not a training run of pfca_jax.main '
                    '(which writes it when training starts)')
  try:
    with open(path) as f:
      content = json.load(f)
  except (OSError, ValueError) as e:
    raise UserError(f'cannot read {path}: {e}') from None
  run_task = content.get('task') if isinstance(content, dict) else None
  if run_task not in TASK_COMMANDS:
    raise UserError(f'{path} has task={run_task!r}; this command handles {", ".join(TASK_COMMANDS)}')
  if task is not None and run_task != task:
    model = content.get('model', {}).get('name', '?')
    raise UserError(f'workdir {workdir!r} is a {run_task} run ({model}): use `{TASK_COMMANDS[run_task]}`, '
                    f'not `{TASK_COMMANDS[task]}`')
  if not checkpoint_steps(workdir):
    raise UserError(f'workdir {workdir!r} has no checkpoint in {os.path.join(workdir, "checkpoints")} '
                    '(training saves one every checkpoint_every_steps and at its end)')
  import ml_collections
  content.pop('provenance', None)  # What produced the run, not part of its config.
  return ml_collections.ConfigDict(content)


def create_model(config, spec=None):
  """The network of the run: `spec` (the dataset's DatasetSpec) gives the number of classes."""
  from pfca_jax.models.from_config import create_model as create
  if config.task == 'super_resolution':
    return create(config, scale=config.scale)
  return create(config, num_classes=spec.num_classes)


def _paths_and_shapes(tree) -> dict[str, tuple]:
  import jax
  leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
  return {jax.tree_util.keystr(path, simple=True, separator='.'): tuple(leaf.shape) for path, leaf in leaves}


def _check_checkpoint(wanted: dict, stored: dict, directory: str) -> None:
  """Names the first parameter where the checkpoint and the model of config.json disagree (before orbax fails
  in its background threads, which log tracebacks)."""
  wanted = _paths_and_shapes(wanted)
  stored = _paths_and_shapes({k: stored.get(k, {}) for k in ('params', 'batch_stats')})
  for name in sorted(wanted.keys() | stored.keys()):
    if wanted.get(name) != stored.get(name):
      found = 'absent' if name not in stored else f'of shape {stored[name]}'
      needed = 'has no such parameter' if name not in wanted else f'needs {wanted[name]}'
      raise UserError(f'the checkpoint in {directory} does not fit the model of config.json: {name} is {found} '
                      f'there, and the model {needed}')


def restore_variables(workdir: str, model, input_shape, average: bool = False) -> dict:
  """{'params', 'batch_stats'} of the latest checkpoint, on this process's first device.

  The target tree comes from the model itself, so the optimiser state is never read (nor its config
  needed), and its explicit one-device sharding lets a checkpoint written on 8 devices load on 1.
  average: read the moving average of the weights (a run with config.ema_decay > 0) instead of the
  trained weights, as evaluation did.
  """
  import jax
  from pfca_jax.train import sharding
  shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), jax.numpy.zeros(input_shape), train=False))
  placement = sharding.replicated(sharding.create_mesh(jax.local_devices()[:1]))
  target = jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=placement),
                        {'params': shapes['params'], 'batch_stats': shapes.get('batch_stats', {})})
  from pfca_jax.train import checkpointing
  directory = os.path.join(os.path.abspath(workdir), 'checkpoints')
  with checkpointing.reading(workdir) as (manager, step):
    if step is None:
      raise UserError(f'workdir {workdir!r} has no complete checkpoint in {directory}')
    try:
      stored = dict(manager.item_metadata(step)['state'].tree)
      stored = dict(stored.get('ema') or {}) if average else stored
    except Exception:  # noqa: BLE001 -- a damaged checkpoint: restore_newest below names it and moves on.
      stored = None
    if stored is not None:  # A checkpoint of another model: said by name, not as damage.
      _check_checkpoint(target, stored, directory)
    used, restored, _, damaged = checkpointing.restore_newest(manager, {'ema': target} if average else target,
                                                              partial=True)
    for bad_step, why in damaged:
      print(f'warning: the checkpoint of step {bad_step} in {directory} cannot be read ({why}); '
            f'predicting with the checkpoint of step {used}', file=sys.stderr, flush=True)
  return dict(restored['ema'] if average else restored)


def uses_average(config) -> bool:
  """Whether the run kept a moving average of its weights, which evaluation scored and prediction uses."""
  return config.get('ema_decay', 0.0) > 0


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
  config = open_run(args.workdir, 'classification')
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
    model = create_model(config, spec)
  for text in notes:  # Only once every image could be read: a failure is then the one line printed.
    note(text)
  forward = make_forward(model, restore_variables(args.workdir, model, (1, *inputs[0].shape),
                                                    uses_average(config)))
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
  config = open_run(args.workdir, 'super_resolution')
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
    model = create_model(config)
  for text in image.notes:
    note(text)
  if image.alpha is not None:
    note(f'{args.input} has an alpha channel; the RGB goes through the model, the alpha is upscaled bicubically'
         if stores_alpha else
         f'{args.input} has an alpha channel, which {os.path.splitext(args.output)[1]} files cannot store; dropped')
  upscaler = tiling.Upscaler(model, tile=tile, overlap=overlap)
  upscaler.use(restore_variables(args.workdir, model, (1, tile, tile, 3), uses_average(config)))
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


class _Parser(argparse.ArgumentParser):
  """argparse's mistakes as one UserError line (its default is usage text plus the error)."""

  def error(self, message):
    raise UserError(f'{message} (see {self.prog} --help)')


def parser() -> argparse.ArgumentParser:
  main_parser = _Parser(prog='python -m pfca_jax.predict', description='\n\n'.join(__doc__.split('\n\n')[:2]),
                        formatter_class=argparse.RawDescriptionHelpFormatter)
  commands = main_parser.add_subparsers(dest='command', required=True, parser_class=_Parser)
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
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
  try:
    args = parser().parse_args(argv)
    from absl import logging
    from pfca_jax.cli import command
    # Orbax's lines are not the user's business: a checkpoint that cannot be read is said by us, in one line.
    logging.set_verbosity(logging.FATAL)
    command.quiet_closed_event_loops()
    (classify if args.command == 'classify' else upscale)(args)
  except UserError as e:
    print(f'error: {e}', file=sys.stderr, flush=True)
    return 2
  except KeyboardInterrupt:
    print('interrupted', file=sys.stderr, flush=True)
    return 130
  return 0


if __name__ == '__main__':
  sys.exit(main())
