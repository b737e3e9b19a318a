"""Convolutions lowered as matrix products on the CPU where that is faster, chosen per compiled program.

The layer has exactly `nn.Conv`'s parameter (`kernel`, HWIO) and outputs, so the lowering never
changes a checkpoint or a result beyond float rounding (tested). What each choice gains, and the
lowerings tried and rejected: experiments/results/speed.md, "Matmul convolutions".

- 1x1 convolutions are products of 2-D matrices, `x.reshape(-1, C_in) @ W` (a strided 1x1, the
  projection shortcut, slices first), faster on the CPU than `lax.conv`. They are 2-D because as a
  4-D einsum the weight gradient contracts over (N, H, W) and XLA materialises transposed copies of
  the activations for it.
- A stride-1 kxk convolution with few outputs (k*k*C_out <= C_in, e.g. MSRResNet's last 3x3,
  64 -> 3 channels) is one product with all k*k taps' kernels side by side, then k*k shifted adds of
  its thin output, because `lax.conv`'s weight gradient first transposes the whole input to
  channels-major.
- Every other convolution stays `lax.conv`: the alternatives tried for them tied or were slower.

`conv_impl`: 'xla' (every convolution through `lax.conv_general_dilated`, i.e. `nn.Conv`), 'matmul'
(the lowering above), or 'auto': 'matmul' in a program compiled for the CPU, 'xla' in one compiled
for a GPU or TPU, whose convolutions are already matrix-unit programs (platform.py decides).
"""

import functools
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from pfca_jax.models.fast.platform import for_platform

CONV_IMPLS = ('auto', 'xla', 'matmul')


def check_impl(impl: str) -> str:
  if impl not in CONV_IMPLS:
    raise ValueError(f'unknown conv_impl {impl!r}; valid: {", ".join(CONV_IMPLS)}')
  return impl


def _pair(value: int | Sequence[int]) -> tuple[int, int]:
  return (value, value) if isinstance(value, int) else tuple(value)


class Conv(nn.Module):
  """`nn.Conv` (NHWC, symmetric integer padding, no dilation or groups), lowered as `impl` says.

  `impl` is a `conv_impl` (see above): 'xla' is `nn.Conv`'s own lowering, 'matmul' the one above,
  'auto' picks by the platform the program is compiled for.

  Called with `add_bias=False`, it returns `(y, bias)` with the bias not yet added (None without one),
  so that the caller can fold the bias into whatever reads y instead of storing y + bias
  (layers.py's conv_then_attention, where the attention takes it). The parameters are the same either way.
  """
  features: int
  kernel_size: Sequence[int]
  strides: int | Sequence[int] = 1
  padding: int = 0
  use_bias: bool = True
  dtype: Any = None
  kernel_init: Callable = nn.initializers.lecun_normal()
  bias_init: Callable = nn.initializers.zeros
  impl: str = 'auto'

  @nn.compact
  def __call__(self, x, add_bias: bool = True):
    kh, kw = self.kernel_size
    sh, sw = _pair(self.strides)
    cin = x.shape[-1]
    kernel = self.param('kernel', self.kernel_init, (kh, kw, cin, self.features), jnp.float32)
    dtype = self.dtype or jnp.result_type(x, kernel)
    x, kernel = x.astype(dtype), kernel.astype(dtype)
    xla = functools.partial(_xla_conv, strides=(sh, sw), padding=self.padding)
    matmul = xla
    if (kh, kw) == (1, 1) and self.padding == 0:
      matmul = functools.partial(_strided_matmul, strides=(sh, sw))
    elif (sh, sw) == (1, 1) and kh * kw * self.features <= cin:
      matmul = functools.partial(_tap_product, padding=self.padding)
    impl = check_impl(self.impl)
    if impl == 'auto' and matmul is not xla:
      y = for_platform(matmul, xla, x, kernel)
    else:
      y = (xla if impl == 'xla' else matmul)(x, kernel)
    bias = self.param('bias', self.bias_init, (self.features,), jnp.float32).astype(dtype) if self.use_bias else None
    if not add_bias:
      return y, bias
    return y if bias is None else y + bias


def _xla_conv(x, kernel, strides, padding: int):
  return jax.lax.conv_general_dilated(x, kernel, strides, [(padding, padding)] * 2,
                                      dimension_numbers=('NHWC', 'HWIO', 'NHWC'))


def _strided_matmul(x, kernel, strides):
  """A 1x1 convolution: subsample by the strides, then one product."""
  sh, sw = strides
  return _matmul(x[:, ::sh, ::sw] if (sh, sw) != (1, 1) else x, kernel[0, 0])


def _matmul(x, kernel):
  """(N, H, W, K) @ (K, D) as a product of 2-D matrices (see the module docstring for why 2-D)."""
  n, h, w, k = x.shape
  return (x.reshape(n * h * w, k) @ kernel).reshape(n, h, w, kernel.shape[-1])


def _tap_product(x, kernel, padding: int):
  """Stride-1 convolution as x @ (every tap's kernel), then each tap's slice shifted into place.

  Output pixel (i, j) sums, over taps (a, b), input pixel (i + a - p, j + b - p) times tap (a, b): so
  with z = x @ K (one (a, b, out) column block per tap), zero-padded by p, it is
  sum_ab z[i + a, j + b, a, b]. The product's output is k*k*C_out wide, which the caller keeps at most
  C_in so it is no larger than x.
  """
  n, h, w, cin = x.shape
  kh, kw, _, out = kernel.shape
  z = _matmul(x, kernel.transpose(2, 0, 1, 3).reshape(cin, kh * kw * out)).reshape(n, h, w, kh, kw, out)
  z = jnp.pad(z, ((0, 0), (padding, padding), (padding, padding), (0, 0), (0, 0), (0, 0)))
  ho, wo = h + 2 * padding - kh + 1, w + 2 * padding - kw + 1
  return sum(z[:, a:a + ho, b:b + wo, a, b] for a in range(kh) for b in range(kw))
