"""How a PyTorch state dict and a flax variable tree name and lay out the same numbers.

Our modules are named after the PyTorch references' (`pfca_jax.models`), so the PyTorch name of a
flax leaf is its module path joined with dots plus PyTorch's name for the leaf:

    flax                                              PyTorch                      layout
    params/<path>/kernel (4-D, a convolution)         <path>.weight                HWIO -> OIHW
    params/<path>/kernel (2-D, the classifier)        <path>.weight                (in, out) -> (out, in)
    params/<path>/bias                                <path>.bias                  same
    params/<path>/scale (BatchNorm)                   <path>.weight                same
    batch_stats/<path>/mean, var                      <path>.running_mean, _var    same
    (nothing)                                         <path>.num_batches_tracked   dropped / written as 0

with two renames for the CIFAR ResNets of SimAM's reference code, which call the classifier `linear`
and the projection shortcut `shortcut` (ours: `fc`, `downsample`, torchvision's names). MSRResNet's
pixel shuffle needs no reordering of upconv1/upconv2's output channels: `models.msrresnet.pixel_shuffle`
reads them in PyTorch's order (channel c * r * r + i * r + j goes to pixel (i, j) of c), which the
parity tests check against `torch.nn.functional.pixel_shuffle`.

A `Leaf` ties one PyTorch name to one flax path; `leaves(model_name, tree)` lists them for a model's
variable tree in the order of the PyTorch state dict.
"""

import dataclasses
import re

import numpy as np

# Flax module names -> PyTorch module names, per model family (ours are torchvision's).
_CIFAR_RENAMES = {'fc': 'linear', 'downsample': 'shortcut'}

# Flax leaf name -> PyTorch leaf name, for a BatchNorm (has `scale`) and for anything else.
_NORM_PARAMS = {'scale': 'weight', 'bias': 'bias'}
_NORM_STATS = {'mean': 'running_mean', 'var': 'running_var'}
_OTHER_PARAMS = {'kernel': 'weight', 'bias': 'bias'}

# The buffer every PyTorch BatchNorm has and no flax one does: how many batches updated the running
# statistics. It only matters to a BatchNorm built with momentum=None, which none of the references is.
BATCHES_TRACKED = 'num_batches_tracked'

# The name of the attention submodule in every residual block (`models.resnet`, `models.msrresnet`).
ATTENTION = 'attention'


@dataclasses.dataclass(frozen=True)
class Leaf:
  """One array: its flax collection and path, its PyTorch name, and how its layout changes."""
  collection: str            # 'params' or 'batch_stats'.
  path: tuple[str, ...]      # Module path and leaf name inside the collection.
  torch_name: str
  flax_shape: tuple[int, ...]

  @property
  def torch_shape(self) -> tuple[int, ...]:
    return tuple(to_torch(np.empty(self.flax_shape, np.float32)).shape) if self.flax_shape else ()

  @property
  def flax_name(self) -> str:
    return '/'.join((self.collection, *self.path))


def to_torch(array: np.ndarray) -> np.ndarray:
  """Flax layout -> PyTorch layout: HWIO convolution kernels to OIHW, (in, out) dense kernels to (out, in)."""
  if array.ndim == 4:
    return array.transpose(3, 2, 0, 1)
  if array.ndim == 2:
    return array.T
  return array


def to_flax(array: np.ndarray) -> np.ndarray:
  """PyTorch layout -> flax layout, the inverse of `to_torch`."""
  if array.ndim == 4:
    return array.transpose(2, 3, 1, 0)
  if array.ndim == 2:
    return array.T
  return array


def _torch_module(model_name: str, modules: tuple[str, ...]) -> str:
  renames = _CIFAR_RENAMES if model_name.startswith('cifar_') else {}
  return '.'.join(renames.get(m, m) for m in modules)


def walk(tree, prefix=()):
  """(path, array) of every leaf of a nested mapping, in the mapping's order."""
  for key, value in tree.items():
    if hasattr(value, 'items'):
      yield from walk(value, (*prefix, key))
    else:
      yield (*prefix, key), value


def leaves(model_name: str, variables) -> list[Leaf]:
  """The leaves of a flax variable tree ({'params': ..., 'batch_stats': ...}, arrays or shape structs),
  in PyTorch state-dict order: modules in the order the tree holds them (the order `init` created them,
  which is the references' definition order), each module's parameters before its statistics.

  Attention parameters (SE's, ECA's) are listed too, under a PyTorch-style name; no reference
  state dict has them (see `is_attention`).
  """
  stats = dict(walk(variables.get('batch_stats', {})))
  modules: dict[tuple[str, ...], dict] = {}  # Module path -> {leaf name: array}, in the tree's order.
  for path, value in walk(variables.get('params', {})):
    modules.setdefault(path[:-1], {})[path[-1]] = value
  result = []
  for module, params in modules.items():
    torch_module = _torch_module(model_name, module)
    is_norm = 'scale' in params
    names = _NORM_PARAMS if is_norm else _OTHER_PARAMS
    for name in sorted(params, key=list(names).index if set(params) <= set(names) else None):
      if name not in names:
        raise ValueError(f'no PyTorch name for the flax parameter {"/".join((*module, name))}')
      result.append(Leaf('params', (*module, name), f'{torch_module}.{names[name]}', tuple(params[name].shape)))
    for stat, torch_stat in _NORM_STATS.items() if is_norm else ():
      if (*module, stat) in stats:
        result.append(Leaf('batch_stats', (*module, stat), f'{torch_module}.{torch_stat}',
                           tuple(stats[(*module, stat)].shape)))
  return result


def flat(variables) -> dict:
  """{'params/conv1/kernel': leaf, ...} of a variable tree {collection: nested mapping}."""
  return {'/'.join((collection, *path)): value for collection, tree in variables.items() for path, value in walk(tree)}


def in_call_order(variables, order: dict[tuple[str, ...], int]) -> dict:
  """The variable tree with every level's keys sorted by when their module was first called (`order`:
  module path -> rank); names never called keep their relative order, after the others."""
  def sort(tree, prefix):
    if not hasattr(tree, 'items'):
      return tree
    keys = sorted(tree, key=lambda k: order.get((*prefix, k), len(order)))
    return {k: sort(tree[k], (*prefix, k)) for k in keys}
  return {collection: sort(tree, ()) for collection, tree in variables.items()}


def is_attention(leaf: Leaf) -> bool:
  """Whether the leaf belongs to an attention module (SE's dense layers, ECA's 1-D convolution)."""
  return ATTENTION in leaf.path[:-1]


def batches_tracked_names(leaf_list: list[Leaf]) -> list[str]:
  """The `num_batches_tracked` buffer names of the BatchNorms among `leaf_list`."""
  return [leaf.torch_name.rsplit('.', 1)[0] + f'.{BATCHES_TRACKED}' for leaf in leaf_list
          if leaf.collection == 'batch_stats' and leaf.path[-1] == 'var']


# SimAM's reference code wraps the module an attention follows in an nn.Sequential, which renames its
# parameters: `bn2.weight` becomes `bn2.0.weight` (`bn3` in bottlenecks; `conv2.0.weight` for SimAM, which
# follows the 3x3 convolution). The attentions without parameters leave nothing else behind.
_WRAPPED = re.compile(r'^(layer\d+\.\d+\.(?:bn2|bn3|conv2))\.0\.')


def wrapped_module(name: str) -> str | None:
  """'bn2' for 'layer1.0.bn2.0.weight' (a module SimAM's code wrapped to put an attention after it), else None."""
  match = _WRAPPED.match(name.removeprefix('module.'))
  return match.group(1).rsplit('.', 1)[1] if match else None


def unwrap_sequential_names(state: dict) -> dict:
  """SimAM-reference names with an attention-wrapped module (`layer1.0.bn2.0.weight`) -> plain ones."""
  return {_WRAPPED.sub(r'\1.', name): value for name, value in state.items()}
