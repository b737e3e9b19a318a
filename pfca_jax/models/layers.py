"""The building blocks the networks are made of, and the one switch between their two implementations.

A network takes `attention_impl` and asks `choose` for its layers:

- 'reference': flax's own `nn.Conv`, `nn.BatchNorm` and `nn.max_pool`, and each attention exactly as
  models/attention.py defines it. What you read is what runs; edit an attention and every network
  built this way changes with it.
- 'fast' (the default): models/fast/, the same functions computed with fewer passes over memory and
  leaner derivatives. Same parameters and checkpoints; outputs equal within float32 rounding
  (tests/test_fast_layer.py). It replaces only the attention classes it has a fast version of, so a
  new attention runs as defined; an edited PFCA needs 'reference' until the fast version follows.

The networks call the layers through the six members below, so a block's code reads the same with
either.
"""

import dataclasses

import flax.linen as nn

from pfca_jax.models.fast.layers import Fast

ATTENTION_IMPLS = ('fast', 'reference')


@dataclasses.dataclass(frozen=True)
class Reference:
  conv = nn.Conv
  batch_norm = nn.BatchNorm
  max_pool = staticmethod(nn.max_pool)

  def norm_then_attention(self, norm, attend, x):
    """attend()(norm()(x)): the norm and the attention are factories with their names bound."""
    return attend()(norm()(x))

  def conv_then_attention(self, make_conv, attend, x):
    """attend()(make_conv()(x))."""
    return attend()(make_conv()(x))

  def residual_output(self, x):
    """A residual block's output, as it leaves the block."""
    return x


def choose(attention_impl: str, conv_impl: str = 'auto') -> Reference | Fast:
  if attention_impl not in ATTENTION_IMPLS:
    raise ValueError(f'unknown attention_impl {attention_impl!r}; valid: {", ".join(ATTENTION_IMPLS)}')
  fast = Fast(conv_impl)  # Checks conv_impl either way.
  return Reference() if attention_impl == 'reference' else fast
