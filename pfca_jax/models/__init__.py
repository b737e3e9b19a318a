"""Model zoo: one factory, `create`, for every network the project trains.

    model = create('resnet50', attention='pfca')
    variables = model.init(jax.random.key(0), jnp.zeros((1, 224, 224, 3)))
    logits = model.apply(variables, images, train=False)
"""

from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from pfca_jax.models import resnet
from pfca_jax.models.attention import ATTENTIONS, ECA, PFCA, SE, SimAM, get_attention
from pfca_jax.models.layers import ATTENTION_IMPLS
from pfca_jax.models.msrresnet import MSRResNet

# name -> (constructor, default num_classes or None for a model without a classifier).
MODELS: dict[str, tuple[Callable[..., nn.Module], int | None]] = {
    'resnet18': (resnet.ResNet18, 1000),
    'resnet34': (resnet.ResNet34, 1000),
    'resnet50': (resnet.ResNet50, 1000),
    'resnet101': (resnet.ResNet101, 1000),
    'resnet152': (resnet.ResNet152, 1000),
    'cifar_resnet20': (resnet.CifarResNet20, 100),
    'cifar_resnet32': (resnet.CifarResNet32, 100),
    'cifar_resnet56': (resnet.CifarResNet56, 100),
    'cifar_resnet110': (resnet.CifarResNet110, 100),
    'cifar_resnet164': (resnet.CifarResNet164, 100),
    'msrresnet': (MSRResNet, None),
}

# The options a user may set through `create`; architecture fields fixed by the
# name (stage sizes, widths, stem) are not among them.
RESNET_OPTIONS = ('attention_options', 'attention_position', 'dtype', 'zero_init_last_bn', 'attention_impl',
                  'conv_impl')
MSRRESNET_OPTIONS = ('scale', 'num_feat', 'num_block', 'num_in_ch', 'num_out_ch', 'attention_options', 'dtype',
                     'attention_impl', 'conv_impl')
DTYPES = ('float32', 'bfloat16', 'float16')


def valid_options(name: str) -> tuple[str, ...]:
  return MSRRESNET_OPTIONS if name == 'msrresnet' else RESNET_OPTIONS


def _as_dtype(dtype: Any) -> Any:
  try:
    canonical = jnp.dtype(dtype).name
  except TypeError:
    canonical = None
  if canonical not in DTYPES:
    raise ValueError(f'unknown dtype {dtype!r}; valid: {", ".join(DTYPES)}')
  return jnp.dtype(canonical)


def create(name: str, *, num_classes: int | None = None, attention: str = 'none', **options) -> nn.Module:
  """Builds model `name` with `attention` in every residual block.

  Args:
    name: one of MODELS.
    num_classes: classifier width (default 1000 for ImageNet ResNets, 100 for
      CIFAR ResNets); not accepted by 'msrresnet'.
    attention: one of attention.ATTENTIONS.
    **options: model options, see `valid_options(name)`; `dtype` may be a name
      such as 'bfloat16'; `attention_impl='reference'` builds the network from the
      definitions alone (models/layers.py), 'fast' (default) from models/fast/.

  Raises:
    ValueError: with one line naming the bad value and the valid ones.
  """
  if name not in MODELS:
    raise ValueError(f'unknown model {name!r}; valid: {", ".join(MODELS)}')
  ctor, default_classes = MODELS[name]
  unknown = sorted(set(options) - set(valid_options(name)))
  if unknown:
    raise ValueError(f'unknown option(s) {unknown} for model {name!r}; valid: {", ".join(valid_options(name))}')
  if 'dtype' in options:
    options['dtype'] = _as_dtype(options['dtype'])
  if default_classes is None:
    if num_classes is not None:
      raise ValueError(f'model {name!r} has no classifier; num_classes={num_classes!r} must be left unset')
  else:
    options['num_classes'] = default_classes if num_classes is None else num_classes
  return ctor(attention=attention, **options)


def count_params(params) -> int:
  """Number of scalars in a parameter tree (concrete arrays or jax.ShapeDtypeStructs)."""
  return sum(int(x.size) for x in jax.tree_util.tree_leaves(params))


__all__ = ['ATTENTIONS', 'ATTENTION_IMPLS', 'ECA', 'MODELS', 'MSRResNet', 'PFCA', 'SE', 'SimAM', 'create',
           'count_params', 'get_attention', 'valid_options']
