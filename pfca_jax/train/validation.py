"""Checks run before any compute, so that a bad config, workdir or CLI value costs seconds, not a run.

Every failure is a `UserError` whose message is one line naming the bad value and the valid ones;
`pfca_jax.main` prints it and exits non-zero instead of showing a traceback.
"""

import ast
import os
import tempfile

from pfca_jax import models
from pfca_jax.train import optim
from pfca_jax.errors import UserError
from pfca_jax.models.attention import get_attention


def parse_options(text: str) -> dict:
  """'lam=1e-3,variance=biased' -> {'lam': 0.001, 'variance': 'biased'}; values are Python literals or strings."""
  options = {}
  for item in filter(None, (part.strip() for part in (text or '').split(','))):
    key, sep, value = item.partition('=')
    if not sep or not key.strip():
      raise UserError(f'attention_options item {item!r} is not key=value (e.g. "lam=1e-3,variance=biased")')
    try:
      options[key.strip()] = ast.literal_eval(value.strip())
    except (ValueError, SyntaxError):
      options[key.strip()] = value.strip()
  return options


def model_options(config) -> dict:
  """The keyword arguments of models.create for config.model (all validated by the model itself)."""
  m = config.model
  options = {'attention': m.attention, 'dtype': m.dtype, 'conv_impl': m.get('conv_impl', 'auto'),
             'attention_impl': m.get('attention_impl', 'fast'),
             'attention_options': parse_options(m.attention_options) or None}
  if m.name == 'msrresnet':
    options.update(num_feat=m.num_feat, num_block=m.num_block)
  else:
    options.update(attention_position=m.attention_position, zero_init_last_bn=m.zero_init_last_bn)
  return options


def create_model(config, **extra):
  """Builds config.model, turning any bad name or option into a UserError."""
  try:
    get_attention(config.model.attention, parse_options(config.model.attention_options))
    return models.create(config.model.name, **model_options(config), **extra)
  except UserError:
    raise
  except (ValueError, TypeError) as e:
    raise UserError(f'config.model: {e}') from None


def check_training(config) -> None:
  """Optimiser, schedule and durations: names and ranges, before the dataset is even opened."""
  optim.check_names(config)
  if config.num_train_steps <= 0 and not config.num_epochs > 0:
    raise UserError(f'num_epochs={config.num_epochs} and num_train_steps={config.num_train_steps}: '
                    'one of them must be > 0')
  for name in ('log_every_steps', 'keep_checkpoints'):
    if config[name] < 1:
      raise UserError(f'{name}={config[name]} must be >= 1')
  for name in ('eval_every', 'checkpoint_every'):
    if config[f'{name}_steps'] <= 0 and not config[f'{name}_epochs'] > 0:
      raise UserError(f'{name}_steps={config[f"{name}_steps"]} and {name}_epochs={config[f"{name}_epochs"]}: '
                      'one of them must be > 0')


def check_workdir(workdir: str) -> str:
  """Creates the workdir if needed and proves it writable; returns its absolute path."""
  if not workdir:
    raise UserError('--workdir is required: the folder for checkpoints, TensorBoard events and results.json')
  path = os.path.abspath(os.path.expanduser(workdir))
  try:
    os.makedirs(path, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path, prefix='.write_test_'):
      pass
  except OSError as e:
    raise UserError(f'workdir {path} is not writable ({e.strerror or e})') from None
  return path
