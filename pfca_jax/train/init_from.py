"""`config.init_from`: a run that starts from trained weights instead of a random initialisation.

The weights come from a run folder (its newest readable checkpoint; the moving average when the run
kept one), from a folder written by `python -m pfca_jax.convert from_torch`, or from a PyTorch .pth
file (torchvision / BasicSR / SimAM-reference names, read through `pfca_jax.convert`). They replace
the parameters and BatchNorm statistics of the freshly initialised state; the optimiser's state stays
fresh, and so does the step count and the learning-rate schedule. The attention of this run may
differ from the one the weights were trained with: PFCA and SimAM add no parameters, and SE's or ECA's
keep their own initialisation (from config.seed) when the weights have none. Anything else that does
not fit (another network, another number of classes or scale) is refused in one line, before anything is
compiled or written. A run resumed from its own checkpoint never reads init_from.
"""

import dataclasses
import json
import os

import jax
import numpy as np

from pfca_jax import convert, run_folder
from pfca_jax.convert import layout, recognise, torch_files
from pfca_jax.errors import UserError
from pfca_jax.train.validation import check_local_path

_ACCEPTS = ('a run folder (with checkpoints/), a folder written by python -m pfca_jax.convert from_torch, or a '
            'PyTorch .pth file')


@dataclasses.dataclass(frozen=True)
class Weights:
  """config.init_from once checked: its path, and for a .pth file the state dict read then (read once)."""
  path: str
  state: dict | None = None
  key: str | None = None  # Where in the file the state dict was: 'params_ema', 'params', ... or None.


def check(config) -> Weights | None:
  """config.init_from after checking it exists and is one of the accepted kinds; None when unset."""
  path = config.get('init_from', '')
  if not path:
    return None
  check_local_path(path, 'init_from')
  if not os.path.exists(path):
    raise UserError(f'init_from {path!r} does not exist; it takes {_ACCEPTS}')
  if os.path.isfile(path):  # Read now: a file that is not a checkpoint, or of another network, costs no data.
    state, key = torch_files.read(path)
    found = recognise.recognise(convert.torch_names(state))
    if found is not None and found[0] != config.model.name:
      raise UserError(f'init_from {path!r} holds {recognise.describe(found)} weights; this run trains '
                      f'{config.model.name}')
    return Weights(path, state, key)
  run_config = os.path.join(path, 'config.json')
  if not os.path.isfile(run_config) or not os.path.isdir(os.path.join(path, 'checkpoints')):
    raise UserError(f'init_from {path!r} is a folder without config.json and checkpoints/; it takes {_ACCEPTS}')
  try:
    with open(run_config) as f:
      model = json.load(f)['model']['name']
  except (OSError, ValueError, KeyError, TypeError):
    raise UserError(f'init_from {path!r}: {run_config} is not the config of a pfca_jax run') from None
  if model != config.model.name:
    raise UserError(f'init_from {path!r} holds {model} weights; this run trains {config.model.name}')
  return Weights(path)


def _from_folder(path: str) -> tuple[dict[str, np.ndarray], dict]:
  """{flax name: array} of the folder's newest readable checkpoint: its moving average when it has one."""
  weights = run_folder.read_weights(path)
  source = {'folder': os.path.abspath(path), 'step': weights.step,
            'weights': 'moving average' if weights.average else 'trained'}
  if 'converted_from' in weights.meta:
    source['converted_from'] = weights.meta['converted_from']
  return {name: np.asarray(value) for name, value in layout.flat(weights.average or weights.trained).items()}, source


def _from_file(weights: Weights, model_name: str, wanted: list) -> tuple[dict[str, np.ndarray], dict]:
  values = convert.read_torch_leaves(convert.torch_state_names(weights.state), model_name,
                                     [leaf for leaf in wanted if not layout.is_attention(leaf)], {},
                                     what=f'init_from {weights.path}')
  return ({leaf.flax_name: value for leaf, value in values.items()},
          {'file': os.path.abspath(weights.path), 'key': weights.key})


def load(weights: Weights, model_name: str, abstract_state) -> tuple[dict[str, np.ndarray], dict]:
  """({flax name: array} for this run's parameters and BatchNorm statistics, a record of where they came from).

  Checked strictly against the state: every array except the attention's must be there with its shape,
  and nothing the network does not have. Attention arrays present in a run folder (the same attention)
  are taken; absent ones keep their initialisation.
  """
  wanted = layout.leaves(model_name, {'params': abstract_state.params, 'batch_stats': abstract_state.batch_stats})
  path = weights.path
  if weights.state is not None:
    values, source = _from_file(weights, model_name, wanted)
  else:
    values, source = _from_folder(path)
  required = {leaf.flax_name: leaf.flax_shape for leaf in wanted if not layout.is_attention(leaf)}
  optional = {leaf.flax_name: leaf.flax_shape for leaf in wanted if layout.is_attention(leaf)}
  found = {name: value.shape for name, value in values.items() if name not in optional}
  convert.check_shapes(found, required, f'init_from {path}', model_name)
  for name, value in values.items():
    if name in optional and value.shape != optional[name]:
      raise UserError(f'init_from {path} has {name!r} of shape {value.shape}, where {model_name} needs '
                      f'{optional[name]}')
  source['arrays'] = len(values)
  source['initialised_as_new'] = sorted(set(optional) - set(values))
  return values, source


def apply(state, values: dict[str, np.ndarray], shardings):
  """The state with its parameters, BatchNorm statistics and moving average (if kept) replaced by `values`,
  placed as `shardings` says; the optimiser state is left as initialised."""
  def place(collection):
    def leaf(path, current, sharding):
      name = '/'.join((collection, *(str(getattr(k, 'key', k)) for k in path)))
      if name not in values:
        return current  # An attention's own parameters: kept as initialised.
      value = values[name].astype(current.dtype)
      return jax.make_array_from_callback(value.shape, sharding, lambda index: value[index])
    return leaf

  weights = {c: jax.tree_util.tree_map_with_path(place(c), getattr(state, c), getattr(shardings, c))
             for c in ('params', 'batch_stats')}
  state = state.replace(**weights)
  if jax.tree.leaves(state.ema):  # The average starts from the weights the run starts from.
    state = state.replace(ema={c: jax.tree_util.tree_map_with_path(place(c), state.ema[c], shardings.ema[c])
                               for c in state.ema})
  return state


def describe(source: dict) -> str:
  """The line the trainer prints about where the run's first weights came from."""
  where = (f'{source["file"]}' + (f' ({source["key"]})' if source.get('key') else '') if 'file' in source
           else f'{source["folder"]}, step {source["step"]} ({source["weights"]} weights)')
  new = source.get('initialised_as_new') or []
  return (f'initialised from {where}: {source["arrays"]} arrays; the optimiser starts fresh'
          + (f'; {len(new)} attention arrays start from the seed' if new else ''))
