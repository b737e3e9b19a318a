"""The fast building blocks: what a network built with `attention_impl='fast'` (the default) is made of.

Same parameters, state and results as models/layers.py's `Reference`, within float32 rounding
(tests/test_fast_layer.py holds every network and attention to that):

- convolutions lowered as matrix products in programs compiled for the CPU (conv.py, `conv_impl`);
- every BatchNorm of a ResNet computed from per-(n, c) sums, and a PFCA after it folded into it
  (batchnorm.py);
- max pooling with an index-free gradient on the CPU (pooling.py);
- an attention after a biased convolution takes the bias unadded (attention.py);
- each residual block's output stored once on the CPU (cpu_fusion.py).

Only the attention classes of models/attention.py are replaced, each by its fast version; any other
attention (a subclass, or one of your own) runs exactly as defined.
"""

import dataclasses
import functools
from typing import Callable

from pfca_jax.models import attention as definitions
from pfca_jax.models.fast import attention, batchnorm, conv, cpu_fusion, pooling


def fast_version(factory: Callable) -> Callable | None:
  """The fast module for an attention factory (a partial of a class of models/attention.py), or None."""
  cls = getattr(factory, 'func', factory)
  fast = attention.FAST_VERSIONS.get(cls)
  return None if fast is None else functools.partial(fast, **getattr(factory, 'keywords', {}))


@dataclasses.dataclass(frozen=True)
class Fast:
  conv_impl: str = 'auto'
  max_pool = staticmethod(pooling.max_pool_for_platform)
  batch_norm = batchnorm.BatchNorm

  def __post_init__(self):
    conv.check_impl(self.conv_impl)

  @property
  def conv(self):
    return functools.partial(conv.Conv, impl=self.conv_impl)

  def norm_then_attention(self, norm, attend, x):
    if getattr(attend, 'func', None) is definitions.PFCA:  # The definition itself, not a subclass.
      options = {k: v for k, v in attend.keywords.items() if k in ('lam', 'variance')}
      return norm(pfca=True, **options)(x)
    return attend()(norm()(x))

  def conv_then_attention(self, make_conv, attend, x):
    y, bias = make_conv()(x, add_bias=False)
    fast = fast_version(attend)
    if fast is None:
      return attend()(y if bias is None else y + bias)
    return fast()(y, bias=bias)

  def residual_output(self, x):
    return cpu_fusion.materialise(x)
