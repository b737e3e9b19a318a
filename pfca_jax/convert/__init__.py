"""PyTorch weights in and out: torchvision's ResNets, SimAM's CIFAR ResNets, BasicSR's MSRResNet.

    variables = torch_to_flax(torchvision.models.resnet50(weights=...).state_dict(), 'resnet50',
                              attention='pfca')
    logits = models.create('resnet50', attention='pfca').apply(variables, images, train=False)
    state_dict = flax_to_torch(variables, 'resnet50')   # {name: numpy array}, for load_state_dict

Both directions are strict: every name and shape of the model built by
`models.create(model_name, **create_options)` must be there, nothing else may be, and the first
mismatch is one line (`ConversionError`). Layouts are in `pfca_jax.convert.layout`. PyTorch itself is
not needed here (tensors are read through `.numpy()`); reading and writing .pth files is
(`pfca_jax.convert.torch_files`).

Attentions: PFCA and SimAM have no parameters, so plain weights load unchanged into a network with
either inserted, and such a network exports to the plain definition (to compute what ours computes,
the PyTorch model needs the same attention at the same place: docs/pytorch.md). SE and ECA have
parameters no plain checkpoint holds: `torch_to_flax` initialises them as `models.create` does (from
`seed`) and warns; `flax_to_torch` refuses, since the references have nowhere to put them.
"""

import warnings

import jax
import jax.numpy as jnp
import flax.linen as nn
import numpy as np

from pfca_jax import models
from pfca_jax.convert import layout, recognise
from pfca_jax.errors import UserError

__all__ = ['ConversionError', 'check_shapes', 'flax_to_torch', 'template', 'torch_to_flax']


class ConversionError(UserError):
  """A state dict or variable tree that does not fit the model asked for; the message is one line."""


def _create(model_name: str, create_options: dict):
  try:
    return models.create(model_name, **create_options)
  except (ValueError, TypeError) as e:
    raise ConversionError(str(e)) from None


def _input_shape(model_name: str, model) -> tuple[int, ...]:
  # Any input size gives the same variables; a small one keeps `init` cheap.
  return (1, 8, 8, model.num_in_ch) if model_name == 'msrresnet' else (1, 32, 32, 3)


def template(model_name: str, model=None, **create_options):
  """The variable tree of the model, as jax.ShapeDtypeStructs (nothing computed), its modules in the order
  the model calls them: the order of the references' state dicts (flax's own trees are sorted by name)."""
  model = model or _create(model_name, create_options)
  shape = _input_shape(model_name, model)
  order = {}

  def record(call, args, kwargs, context):
    order.setdefault(tuple(context.module.path), len(order))
    return call(*args, **kwargs)

  with nn.intercept_methods(record):
    variables = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros(shape), train=False))
  return layout.in_call_order(variables, order)


def as_numpy(state_dict) -> dict[str, np.ndarray]:
  """{name: numpy array} of a state dict of torch tensors or arrays (float16 / bfloat16 tensors become float32)."""
  result = {}
  for name, value in state_dict.items():
    if hasattr(value, 'detach'):  # A torch.Tensor; NumPy has no bfloat16, so floats go through float32.
      value = value.detach().cpu()
      value = (value.float() if value.is_floating_point() else value).numpy()
    result[str(name)] = np.asarray(value)
  return result


def _strip_prefix(state: dict) -> dict:
  """`module.` (nn.DataParallel / DistributedDataParallel) in front of every name is dropped."""
  if state and all(name.startswith('module.') for name in state):
    return {name[len('module.'):]: value for name, value in state.items()}
  return state


def check_shapes(found: dict[str, tuple], wanted: dict[str, tuple], what: str, model_name: str, hint: str = '') -> None:
  """Names and shapes, strictly: the first missing, unexpected or misshapen array in one line."""
  missing = [name for name in wanted if name not in found]
  if missing:
    raise ConversionError(f'{what} lacks {missing[0]!r}, which {model_name} needs ({len(missing)} of its '
                          f'{len(wanted)} arrays are missing){hint}')
  unexpected = [name for name in found if name not in wanted]
  if unexpected:
    raise ConversionError(f'{what} has {unexpected[0]!r}, which {model_name} does not have ({len(unexpected)} '
                          f'unexpected array(s)){hint}')
  for name, shape in wanted.items():
    if tuple(found[name]) != tuple(shape):
      raise ConversionError(f'{what} has {name!r} of shape {tuple(found[name])}, where {model_name} needs '
                            f'{tuple(shape)}{hint}')


def _hint(state: dict, model_name: str, model_options: dict) -> str:
  """'; it holds resnet18 (num_classes=10)' when the state dict is recognisably another network than
  `model_name` with `model_options` (the built model's values: defaults included)."""
  found = recognise.recognise(state)
  if found is None:
    return ''
  name, options = found
  if name == model_name and all(model_options.get(k, v) == v for k, v in options.items()):
    return ''
  return f'; it holds {recognise.describe(found)}'


def model_options(model) -> dict:
  """The options `recognise` reads from a file, as the built model has them (defaults included)."""
  names = ('num_classes', 'scale', 'num_feat', 'num_block', 'num_in_ch', 'num_out_ch')
  return {name: getattr(model, name) for name in names if hasattr(model, name)}


def torch_names(state_dict) -> dict:
  """The state dict under the names this module reads, values untouched: no `module.` prefix, no
  `num_batches_tracked`, SimAM-reference attention wrappers unwrapped (`layout.unwrap_sequential_names`).
  Enough to `recognise` a file without converting its tensors."""
  state = layout.unwrap_sequential_names(_strip_prefix({str(name): value for name, value in state_dict.items()}))
  return {name: value for name, value in state.items() if not name.endswith(f'.{layout.BATCHES_TRACKED}')}


def torch_state_names(state_dict) -> dict[str, np.ndarray]:
  """`torch_names` with every tensor as a NumPy array."""
  return as_numpy(torch_names(state_dict))


def read_torch_leaves(state: dict[str, np.ndarray], model_name: str, leaves: list, options: dict,
                      what: str = 'the state dict') -> dict:
  """{leaf: flax-layout float32 array} for `leaves` (those without attention), checked strictly against `state`."""
  check_shapes({name: value.shape for name, value in state.items()},
               {leaf.torch_name: leaf.torch_shape for leaf in leaves}, what, model_name,
               _hint(state, model_name, options))
  return {leaf: layout.to_flax(state[leaf.torch_name]).astype(np.float32) for leaf in leaves}


def nest(values: dict) -> dict:
  """{Leaf: array} -> {'params': {...}, 'batch_stats': {...}} (collections that have leaves only)."""
  tree = {}
  for leaf, value in values.items():
    node = tree.setdefault(leaf.collection, {})
    for key in leaf.path[:-1]:
      node = node.setdefault(key, {})
    node[leaf.path[-1]] = value
  return tree


def torch_to_flax(state_dict, model_name: str, *, seed: int = 0, **create_options) -> dict:
  """Flax variables of `models.create(model_name, **create_options)` from a PyTorch state dict.

  state_dict: {name: torch tensor or array} of torchvision's resnet18-152, SimAM's reference CIFAR
    ResNets (plain, or with a parameter-free attention wrapped in as its code does) or BasicSR's
    MSRResNet; a `module.` prefix is dropped, `num_batches_tracked` ignored.
  seed: initialises the parameters of an SE or ECA attention, which no plain state dict holds.
  Returns {'params': ..., 'batch_stats': ...} (MSRResNet: 'params' only) of float32 NumPy arrays.
  Raises ConversionError naming the first missing, unexpected or misshapen array.
  """
  model = _create(model_name, create_options)
  variables = template(model_name, model)
  leaves = layout.leaves(model_name, variables)
  own = [leaf for leaf in leaves if layout.is_attention(leaf)]
  _warn_about_wrapped_attention(state_dict, model.attention)
  values = read_torch_leaves(torch_state_names(state_dict), model_name,
                             [leaf for leaf in leaves if not layout.is_attention(leaf)], model_options(model))
  if own:
    initial = model.init(jax.random.key(seed), jnp.zeros(_input_shape(model_name, model)), train=False)
    for leaf in own:
      values[leaf] = np.asarray(_get(initial, leaf))
    warnings.warn(f'the {model.attention} attention has {sum(int(np.prod(l.flax_shape)) for l in own):,} parameters '
                  f'that {recognise.reference(model_name)} {model_name} does not: they start as models.create '
                  f'initialises them (seed {seed})', stacklevel=2)
  return nest({leaf: values[leaf] for leaf in leaves})


def _warn_about_wrapped_attention(state_dict, attention: str) -> None:
  """SimAM's code wraps a module in an nn.Sequential only to put an attention after it: such names say the
  weights were trained with one (after bn2/bn3: not SimAM; after conv2: SimAM), which may not be `attention`."""
  wrapped = {layout.wrapped_module(str(name)) for name in state_dict} - {None}
  if not wrapped:
    return
  trained = 'simam' if 'conv2' in wrapped else 'an attention after the last BatchNorm'
  if attention == 'none' or (attention == 'simam') != (trained == 'simam'):
    warnings.warn(f'the names of the state dict show it was trained with {trained} (SimAM\'s code wraps '
                  f'{", ".join(sorted(wrapped))} for it); it is converted into a network with attention={attention!r}',
                  stacklevel=3)


def _get(tree, leaf: layout.Leaf):
  node = tree[leaf.collection]
  for key in leaf.path:
    node = node[key]
  return node


def flax_to_torch(variables, model_name: str, **create_options) -> dict[str, np.ndarray]:
  """A PyTorch state dict ({name: NumPy array}) of flax variables of `models.create(model_name, **create_options)`.

  The result loads with `load_state_dict(..., strict=True)` into torchvision's resnet18-152, SimAM's
  reference CIFAR ResNets (without an attention module) or BasicSR's MSRResNet; BatchNorms get
  `num_batches_tracked` = 0. Raises ConversionError for a tree that does not fit the model, and for an
  SE or ECA network, whose attention parameters have no place in those definitions.
  """
  model = _create(model_name, create_options)
  leaves = layout.leaves(model_name, template(model_name, model))
  own = [leaf for leaf in leaves if layout.is_attention(leaf)]
  if own:
    raise ConversionError(f'{recognise.reference(model_name)} {model_name} has no place for the '
                          f'{model.attention} attention\'s parameters (e.g. {own[0].flax_name}); only networks with '
                          'none, pfca or simam export to it')
  check_shapes({name: tuple(np.shape(v)) for name, v in layout.flat(variables).items()},
               {leaf.flax_name: leaf.flax_shape for leaf in leaves}, 'the variable tree', model_name)
  tracked = set(layout.batches_tracked_names(leaves))
  state = {}
  for leaf in leaves:
    # A copy, never a view of the caller's arrays: editing the state dict leaves the variables alone.
    state[leaf.torch_name] = np.array(layout.to_torch(np.asarray(_get(variables, leaf), np.float32)), order='C')
    buffer = leaf.torch_name.rsplit('.', 1)[0] + f'.{layout.BATCHES_TRACKED}'
    if leaf.path[-1] == 'var' and buffer in tracked:
      state[buffer] = np.array(0, np.int64)
  return state
