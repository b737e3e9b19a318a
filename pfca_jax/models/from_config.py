"""The network a config asks for: `create_model(config)`, the one place a config becomes a model.

The trainer's tasks, `predict`, `convert` and the benchmark build their networks here, so that
`config.model` is read one way everywhere. A bad name or option is a one-line `UserError`.
"""

import ast

from pfca_jax import models
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
  """Builds config.model (with `extra` options such as num_classes or scale), any bad value as a UserError."""
  try:
    # The attention's own options are checked by constructing it: flax modules check theirs only when applied.
    get_attention(config.model.attention, parse_options(config.model.attention_options))
    return models.create(config.model.name, **model_options(config), **extra)
  except UserError:
    raise
  except (ValueError, TypeError) as e:
    raise UserError(f'config.model: {e}') from None
