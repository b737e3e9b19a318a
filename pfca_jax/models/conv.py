"""Convolutions lowered as matrix products on the CPU where that is faster, chosen per backend.

The layer has exactly `nn.Conv`'s parameter (`kernel`, HWIO) and outputs, so the lowering is a free
choice that never changes a checkpoint or a result beyond float rounding (tested). Measured on a
2-core AVX-512 CPU, ResNet-50 train step at batch 16 (experiments/results/speed.md):

- 1x1 convolutions are products of 2-D matrices, `x.reshape(-1, C_in) @ W` (a strided 1x1, the
  projection shortcut, slices first): 3.02 s a step against 3.67 s with `lax.conv`. The 2-D spelling
  matters: as a 4-D einsum the weight gradient contracts over (N, H, W) and XLA materialises
  transposed copies of the activations for it (4.3 s a step).
- A stride-1 kxk convolution with few outputs (k*k*C_out <= C_in, e.g. MSRResNet's last 3x3,
  64 -> 3 channels at 128x128) is one product with all k*k taps' kernels side by side, then k*k
  shifted adds of its thin output: 33-42 ms forward and backward against 72-76 ms as `lax.conv`,
  whose weight gradient first transposes the whole input to channels-major.
- Every other convolution stays `lax.conv`. Strided kxk as one product with a patch matrix tied
  with it once the 1x1 products were 2-D; stride-1 3x3 through patches or per-tap products was
  slower.

`conv_impl`: 'xla' (every convolution through `lax.conv_general_dilated`, i.e. `nn.Conv`), 'matmul'
(the lowering above), or 'auto': 'matmul' when the default backend is the CPU, else 'xla' (GPU and
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


class Conv(nn.Module):
  """`nn.Conv` (NHWC, symmetric integer padding, no dilation or groups), lowered as `impl` says.

  `impl` is a `conv_impl` (see below): 'xla' is `nn.Conv`'s own lowering, 'matmul' the one above,
  'auto' picks by backend.

  Called with `add_bias=False`, it returns `(y, bias)` with the bias not yet added (None without one),
  so that the caller can fold the bias into whatever reads y instead of storing y + bias
  (models/msrresnet.py, where the attention takes it). The parameters are the same either way.
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
    lowered = resolve_impl(self.impl) == 'matmul'
    if lowered and (kh, kw) == (1, 1) and self.padding == 0:
      y = x[:, ::sh, ::sw] if (sh, sw) != (1, 1) else x
      y = _matmul(y, kernel[0, 0])
    elif lowered and (sh, sw) == (1, 1) and kh * kw * self.features <= cin:
      y = _tap_product(x, kernel, self.padding)
    else:
      y = jax.lax.conv_general_dilated(x, kernel, (sh, sw), [(self.padding, self.padding)] * 2,
                                       dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
    bias = self.param('bias', self.bias_init, (self.features,), jnp.float32).astype(dtype) if self.use_bias else None
    if not add_bias:
      return y, bias
    return y if bias is None else y + bias


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
