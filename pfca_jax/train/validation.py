"""Checks run before any compute, so that a bad config, workdir or CLI value costs seconds, not a run.

Every failure is a `UserError` whose message is one line naming the bad value and the valid ones;
`pfca_jax.main` prints it and exits non-zero instead of showing a traceback.
"""

import os
import re

from pfca_jax.train import config_defaults, optim
from pfca_jax.errors import UserError


def check_training(config) -> None:
  """Optimiser, schedule, batch and durations: names and ranges, before any data is read."""
  optim.check_names(config)
  check_optimiser_fields(config)
  optim.check_values(config)
  for name in ('batch_size', 'eval_batch_size'):
    if name in config and not (isinstance(config[name], int) and config[name] >= 1):
      raise UserError(f'{name}={config[name]!r} must be a positive integer (the global batch over all devices)')
  if not (config.num_train_steps > 0 or config.num_train_steps == -1):
    raise UserError(f'num_train_steps={config.num_train_steps} must be > 0, or -1 to train for num_epochs')
  if config.num_train_steps == -1 and not config.num_epochs > 0:
    raise UserError(f'num_epochs={config.num_epochs} and num_train_steps={config.num_train_steps}: '
                    'one of them must be > 0')
  ema_decay = config.get('ema_decay', 0.0)
  if isinstance(ema_decay, bool) or not (isinstance(ema_decay, (int, float)) and 0 <= ema_decay < 1):
    raise UserError(f'ema_decay={ema_decay!r} must be in [0, 1): 0 keeps no moving average, BasicSR uses 0.999')
  for name in ('log_every_steps', 'keep_checkpoints'):
    if config[name] < 1:
      raise UserError(f'{name}={config[name]} must be >= 1')
  for name in ('eval_every', 'checkpoint_every'):
    if config[f'{name}_steps'] <= 0 and not config[f'{name}_epochs'] > 0:
      raise UserError(f'{name}_steps={config[f"{name}_steps"]} and {name}_epochs={config[f"{name}_epochs"]}: '
                      'one of them must be > 0')


def check_optimiser_fields(config) -> None:
  """The chosen optimiser and schedule find their fields: a config carries those of its own recipe only."""
  for setting, needs in (('optimizer', config_defaults.OPTIMIZER_FIELDS),
                         ('schedule', config_defaults.SCHEDULE_FIELDS)):
    missing = [field for field in needs[config[setting]] if field not in config]
    if missing:
      valid = [name for name, fields in needs.items() if all(field in config for field in fields)]
      raise UserError(f'{setting}={config[setting]!r} needs the field{"s" * (len(missing) > 1)} '
                      f'{" and ".join(missing)}, which this config does not have; valid here: {", ".join(valid)}')


# scheme:// at the start of a path: gs://, s3://, hdfs://, file://, http(s)://...
_URL = re.compile(r'^[A-Za-z][A-Za-z0-9+.-]*://')


def check_local_path(path: str, what: str) -> None:
  """Refuses a URL where a local folder is needed: os.path would turn 'gs://b/run' into the folder './gs:/b/run'."""
  if _URL.match(path or ''):
    raise UserError(f'{what} {path!r} is a URL; it must be a local or mounted folder (mount a bucket, e.g. with '
                    'gcsfuse, and give its mount point)')


def nearest_existing(path: str) -> str:
  """`path` if it exists, else its nearest existing parent: where a folder to be created would be written."""
  while not os.path.exists(path):
    path = os.path.dirname(path)
  return path


def check_workdir(workdir: str) -> str:
  """Proves the workdir can be created and written, without creating it; returns its absolute path.

  Nothing is written here: the trainer creates the folder once every check has passed, so that a
  refused command leaves no trace. The folder, or else its nearest existing parent, must be a
  writable directory.
  """
  if not workdir:
    raise UserError('--workdir is required: the folder for checkpoints, TensorBoard events and results.json')
  # Checkpoints, TensorBoard events and the JSON records are written with local file APIs (orbax's async
  # saves, the event file, open()): a URL would silently become a local folder named after the scheme.
  check_local_path(workdir, '--workdir')
  path = os.path.abspath(os.path.expanduser(workdir))
  existing = nearest_existing(path)
  if not os.path.isdir(existing):
    what = 'is a file' if existing == path else f'is under {existing}, which is a file'
    raise UserError(f'workdir {path} is not writable: it {what}; give a folder (existing or to be created)')
  if not os.access(existing, os.W_OK | os.X_OK):
    where = 'it' if existing == path else f'its nearest existing parent {existing}'
    raise UserError(f'workdir {path} is not writable: {where} is a folder this user may not write in; '
                    'give a folder you can write to')
  return path
