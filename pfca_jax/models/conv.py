"""Convolutions lowered as matrix products where XLA's CPU convolution is slow, chosen per backend.

The layer has exactly `nn.Conv`'s parameter (`kernel`, HWIO) and outputs, so the lowering is a free
choice that never changes a checkpoint or a result beyond float rounding (tested). Measured on a
2-core AVX-512 CPU (../shared/notes/cpu-performance.md, re-measured in experiments/results/speed.md):

- 1x1 convolutions are matrix products. XLA lowers the weight gradient of a 1x1 `lax.conv` as a
  convolution with an HxW window over transposed activations, 2-4x slower than `x @ W`; a strided
  1x1 (the projection shortcut) is a slice followed by the same product.
- Strided kxk convolutions (the 7x7 stem, ResNet v1.5's 3x3 stride 2) gather their kh*kw shifted,
  strided views of the padded input into one (N*Ho*Wo, kh*kw*Cin) patch matrix and multiply once.
- Stride-1 kxk convolutions stay `lax.conv`: nothing tried beat it.

`conv_impl`: 'xla' (every convolution through `lax.conv_general_dilated`, i.e. `nn.Conv`), 'matmul'
(the lowerings above), or 'auto': 'matmul' when the default backend is the CPU, else 'xla' (GPU and
TPU convolutions are already matrix-unit programs).
"""

from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

CONV_IMPLS = ('auto', 'xla', 'matmul')


def resolve_impl(impl: str) -> str:
  if impl not in CONV_IMPLS:
    raise ValueError(f'unknown conv_impl {impl!r}; valid: {", ".join(CONV_IMPLS)}')
  if impl == 'auto':
    return 'matmul' if jax.default_backend() == 'cpu' else 'xla'
  return impl


def _pair(value: int | Sequence[int]) -> tuple[int, int]:
  return (value, value) if isinstance(value, int) else tuple(value)


class MatmulConv(nn.Module):
  """`nn.Conv` (NHWC, symmetric integer padding, no dilation or groups) with matrix-product lowerings."""
  features: int
  kernel_size: Sequence[int]
  strides: int | Sequence[int] = 1
  padding: int = 0
  use_bias: bool = True
  dtype: Any = None
  kernel_init: Callable = nn.initializers.lecun_normal()
  bias_init: Callable = nn.initializers.zeros

  @nn.compact
  def __call__(self, x):
    kh, kw = self.kernel_size
    sh, sw = _pair(self.strides)
    cin = x.shape[-1]
    kernel = self.param('kernel', self.kernel_init, (kh, kw, cin, self.features), jnp.float32)
    dtype = self.dtype or jnp.result_type(x, kernel)
    x, kernel = x.astype(dtype), kernel.astype(dtype)
    if (kh, kw) == (1, 1) and self.padding == 0:
      y = x[:, ::sh, ::sw] if (sh, sw) != (1, 1) else x
      y = jnp.einsum('nhwc,cd->nhwd', y, kernel[0, 0])
    elif (sh, sw) == (1, 1):
      y = jax.lax.conv_general_dilated(x, kernel, (1, 1), [(self.padding, self.padding)] * 2,
                                       dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
    else:
      y = _patches_matmul(x, kernel, (sh, sw), self.padding)
    if self.use_bias:
      y = y + self.param('bias', self.bias_init, (self.features,), jnp.float32).astype(dtype)
    return y


def _patches_matmul(x, kernel, strides, padding):
  """A strided kxk convolution as one product with the (N*Ho*Wo, kh*kw*Cin) matrix of its input patches."""
  kh, kw, cin, cout = kernel.shape
  sh, sw = strides
  x = jnp.pad(x, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
  n, h, w, _ = x.shape
  ho, wo = (h - kh) // sh + 1, (w - kw) // sw + 1
  # Tap (i, j) of every output pixel, in the kernel's (kh, kw, cin) order.
  taps = [x[:, i:i + sh * (ho - 1) + 1:sh, j:j + sw * (wo - 1) + 1:sw] for i in range(kh) for j in range(kw)]
  patches = jnp.concatenate(taps, axis=-1)
  return jnp.einsum('nhwk,kd->nhwd', patches, kernel.reshape(kh * kw * cin, cout))
