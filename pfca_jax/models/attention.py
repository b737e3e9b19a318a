"""Channel attention modules: PFCA and the baselines it is compared with.

Every module maps an NHWC feature map to one of the same shape and dtype, and
takes an optional ``channels`` so that a network that knows its widths can have
bad widths rejected when the module is built rather than when it is traced.
Definitions follow CONVENTIONS.md section 1.

``module(x, bias=b)`` is ``module(x + b)`` for a per-channel ``b``, the bias of the
convolution before it left unadded: each module reads its input for a spatial mean
(or its deviations from one) and for the rescale, so x + b would be stored and
read again. With per-channel weights (PFCA, SE, ECA) the bias is folded into the
(N, C) values and x + b is never stored; SimAM's weights are per pixel, and the
derivative of its rescale still keeps x + b (only its statistics skip the add).
"""

import functools
import math
from typing import Any, Callable, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp

from pfca_jax.models import cpu_fusion

VARIANCES = ('unbiased', 'biased')


def _add_bias(x: jax.Array, bias: jax.Array | None) -> jax.Array:
  return x if bias is None else x + bias.astype(x.dtype)


def _rescale(x: jax.Array, bias: jax.Array | None, w: jax.Array) -> jax.Array:
  """(x + bias) * w for per-(n, c) weights w of shape (N, C), in x's dtype."""
  w = w.astype(x.dtype)
  if bias is None:
    return x * w[:, None, None, :]
  return _rescale_biased(x, bias.astype(x.dtype), w)


@jax.custom_jvp
def _rescale_biased(x, bias, w):
  return (x + bias) * w[:, None, None, :]


@_rescale_biased.defjvp
def _rescale_biased_jvp(primals, tangents):
  # Every term's primal factor is x, bias or w, so they are all the backward pass keeps (x is the
  # convolution's output, stored anyway); JAX's own rule multiplies by x + bias, which it would then
  # store as well. Transposed: dx = g w, dw = sum_hw g x + bias sum_hw g (summed in float32, as
  # PFCA's statistics are), dbias = sum_n w sum_hw g.
  x, bias, w = primals
  dx, dbias, dw = tangents
  f32 = jnp.float32
  from_w = (x.astype(f32) * dw.astype(f32)[:, None, None, :]).astype(x.dtype)
  per_nc = dbias * w + bias * dw
  return (_rescale_biased(x, bias, w),
          dx * w[:, None, None, :] + from_w + per_nc[:, None, None, :])


def _channel_means(x: jax.Array, bias: jax.Array | None) -> jax.Array:
  """mean_hw(x + bias) per (n, c) in float32, with the bias added to the (N, C) means, not to x.

  dtype=float32 makes XLA accumulate in float32 inside the reduction rather than materialising a
  float32 copy of a bf16 activation.
  """
  u = jnp.mean(x, axis=(1, 2), dtype=jnp.float32)
  return u if bias is None else u + bias.astype(x.dtype).astype(jnp.float32)


def _check_nhwc(name: str, x: jax.Array, channels: int | None) -> None:
  if x.ndim != 4:
    raise ValueError(f'{name} expects an NHWC feature map (4 dims), got shape {x.shape}')
  if channels is not None and x.shape[-1] != channels:
    raise ValueError(f'{name} was built for channels={channels} but got input with {x.shape[-1]} channels')


class Identity(nn.Module):
  """The `none` attention: returns its input, so all variants share one code path."""
  channels: int | None = None

  @nn.compact
  def __call__(self, x, bias=None):
    _check_nhwc('none', x, self.channels)
    return _add_bias(x, bias)


class PFCA(nn.Module):
  """Parameter-free channel attention.

  With u the per-channel spatial mean, mu and var the mean and variance of u over
  channels:  e = (u - mu)^2 / (4 (var + lam)) + 0.5,  y = x * sigmoid(e).

  Since e >= 0.5 every channel keeps at least sigmoid(0.5) ~ 0.62 of its value, and
  channels far from the channel mean in either direction are emphasised. The
  statistics are computed in float32 whatever the input dtype; only the final
  rescale runs in the input dtype. If it follows a BatchNorm whose scale starts at
  zero, it sees an all-zero map at step 0: then var = 0, e = 0.5 everywhere and it
  outputs zeros, which is harmless.

  Attributes:
    lam: the regulariser lambda added to the variance (must be > 0 so that a map
      whose channels all have the same mean gives e = 0.5 rather than NaN).
    variance: 'unbiased' divides the sum of squares by C - 1, 'biased' by C.
    channels: the expected C, checked when given. C < 2 is rejected because the
      unbiased variance of a single channel is undefined.
  """
  lam: float = 1e-4
  variance: str = 'unbiased'
  channels: int | None = None

  def __post_init__(self):
    if self.variance not in VARIANCES:
      raise ValueError(f'PFCA variance={self.variance!r} is not one of {VARIANCES}')
    if not self.lam > 0:
      raise ValueError(f'PFCA lam={self.lam!r} must be > 0')
    if self.channels is not None:
      _check_min_channels(self.channels)
    super().__post_init__()

  @nn.compact
  def __call__(self, x, bias=None):
    _check_nhwc('PFCA', x, self.channels)
    _check_min_channels(x.shape[-1])
    u = descriptor(_channel_means(x, bias))
    return _rescale(x, bias, pfca_weights(u, self.lam, self.variance))


@jax.custom_jvp
def descriptor(u):
  """The identity on PFCA's (N, C) descriptor, whose derivative (and so its backward) is computed apart on the CPU.

  Without it XLA fuses PFCA's whole (N, C) backward (the weights' derivative, about 45 scalar
  operations with the sigmoid's) into the full-resolution loop that consumes the descriptor's
  cotangent, evaluating it once per pixel. In CIFAR ResNets (BatchNorm + PFCA, models/fused.py) that
  loop is the transposed copy made for a 3x3 weight gradient: 124 instructions per such fusion, 44 for
  `none`, 44 with this. In MSRResNet it is the input gradient of each block's PFCA: 53 instructions,
  10 with this. The step-time effect is in experiments/results/speed.md; why a product, in
  models/cpu_fusion.py.
  """
  return u


@descriptor.defjvp
def _descriptor_jvp(primals, tangents):
  # The tangent map is a product with I, so its transpose (the cotangent) is one too.
  return primals[0], cpu_fusion.unfused(tangents[0])


@functools.partial(jax.custom_jvp, nondiff_argnums=(1, 2))
def pfca_weights(u: jax.Array, lam: float, variance: str) -> jax.Array:
  """sigmoid(e) of PFCA for channel descriptors u of shape (N, C): the factor each channel is scaled by.

  The channel mean and variance come from one pass of sums (of v and v^2) rather than the textbook
  two (the mean, then squared deviations from it). Same value; but a reduction whose result feeds a
  second reduction over the same axis made XLA's GPU backend fuse the chain into the surrounding
  full-resolution kernels: ResNet-50 (bf16, batch 256, H200) took +11.0% over `none` that way and
  +1.6% with one level of sums (experiments/results/speed.md). The sums are of v = u - u[:, :1]:
  shifted by one of the channels, E[v^2] - E[v]^2 has no cancellation when the channel means are
  large and nearly equal (it is as exact as the two-pass form in float32, tests/test_attention.py).

  Its derivative is written out (`_pfca_weights_jvp`) so that its sums over C are taken two at a
  time, one reduction each way. XLA's CPU runtime runs every small (N, C) operation as a separate
  step (about 9 us each in a dependent chain): with models/fused.py broadcasting each per-channel
  value once, the operations PFCA adds to a CIFAR ResNet-164 train step went from 1,311 to 699, and
  its overhead over `none` from +5.8% to +2.3% (experiments/results/speed.md).
  """
  return _weights_and_parts(u, lam, variance)[0]


def _weights_and_parts(u, lam, variance):
  c = u.shape[-1]
  # The weights do not change when all of u shifts by a constant: the jvp below takes dv = du.
  v = u - u[:, :1]
  sums = jnp.sum(jnp.stack([v, jnp.square(v)]), axis=-1, keepdims=True)  # One reduction: (2, N, 1).
  mean_v = sums[0] / c
  denom = c - 1 if variance == 'unbiased' else c
  var = jnp.maximum(sums[1] - c * jnp.square(mean_v), 0.0) / denom
  dev = v - mean_v
  d = jnp.square(dev)
  scale = 4.0 * (var + lam)
  return jax.nn.sigmoid(d / scale + 0.5), dev, d, 1.0 / scale, denom


@pfca_weights.defjvp
def _pfca_weights_jvp(lam, variance, primals, tangents):
  # With k = 1 / (4 (var + lam)):  de = 2 k dev (dv - mean dv) - 4 k^2 d dvar,
  # dvar = 2 sum(dev dv) / denom, and da = a (1 - a) de. The two sums over C are taken together,
  # so the transposed map (the backward pass) also needs one packed reduction.
  a, dev, d, k, denom = _weights_and_parts(primals[0], lam, variance)
  dv = tangents[0]
  c = dv.shape[-1]
  sums = jnp.sum(jnp.stack([dv / c, dev * dv]), axis=-1, keepdims=True)
  coef = jnp.stack([2.0 * k * dev, (8.0 / denom) * jnp.square(k) * d])
  de = 2.0 * k * dev * dv - jnp.sum(coef * sums, axis=0)
  return a, a * (1.0 - a) * de


def _check_min_channels(c: int) -> None:
  if c < 2:
    raise ValueError(f'PFCA needs at least 2 channels to compute a channel variance, got C={c}')


class SE(nn.Module):
  """Squeeze-and-excitation: GAP -> Dense(C // r) -> ReLU -> Dense(C) -> sigmoid -> scale.

  Both Dense layers have biases (Hu et al.; timm's SE-ResNet). The hidden width is
  max(1, C // reduction) so that a narrow layer never gets a zero-width bottleneck.
  Computes in the input dtype; parameters are float32.
  """
  reduction: int = 16
  channels: int | None = None

  def __post_init__(self):
    if not (isinstance(self.reduction, int) and self.reduction >= 1):
      raise ValueError(f'SE reduction={self.reduction!r} must be a positive integer')
    super().__post_init__()

  @nn.compact
  def __call__(self, x, bias=None):
    _check_nhwc('SE', x, self.channels)
    c = x.shape[-1]
    s = _channel_means(x, bias).astype(x.dtype)
    s = nn.relu(nn.Dense(max(1, c // self.reduction), dtype=x.dtype, name='fc1')(s))
    s = jax.nn.sigmoid(nn.Dense(c, dtype=x.dtype, name='fc2')(s))
    return _rescale(x, bias, s)


def eca_kernel_size(channels: int, gamma: int = 2, b: int = 1) -> int:
  """ECA's adaptive kernel size: the odd number nearest above |(log2 C + b) / gamma|."""
  t = int(abs((math.log2(channels) + b) / gamma))
  return t if t % 2 else t + 1


class ECA(nn.Module):
  """Efficient channel attention: GAP -> 1-D conv across channels (no bias) -> sigmoid -> scale.

  The kernel size k = eca_kernel_size(C) is fixed by C, so ECA adds k parameters.
  """
  channels: int | None = None

  @nn.compact
  def __call__(self, x, bias=None):
    _check_nhwc('ECA', x, self.channels)
    k = eca_kernel_size(x.shape[-1])
    s = _channel_means(x, bias).astype(x.dtype)
    # Channels become the 1-D "length" axis with a single feature.
    s = nn.Conv(1, (k,), padding=(k - 1) // 2, use_bias=False, dtype=x.dtype, name='conv')(s[..., None])
    return _rescale(x, bias, jax.nn.sigmoid(s[..., 0]))


class SimAM(nn.Module):
  """SimAM: the same energy as PFCA, but over the pixels of each channel.

  d = (x - mean_hw x)^2,  e = d / (4 (sum_hw d / (H W - 1) + lam)) + 0.5,  y = x * sigmoid(e).

  For a 1x1 map the reference divides 0 by 0; here H W - 1 is floored at 1, which
  gives d = 0 and e = 0.5, the limit the formula has for any constant map. A per-channel
  bias does not change d (it shifts x and its mean alike), so it is only added to the output.
  """
  lam: float = 1e-4
  channels: int | None = None

  def __post_init__(self):
    if not self.lam > 0:
      raise ValueError(f'SimAM lam={self.lam!r} must be > 0')
    super().__post_init__()

  @nn.compact
  def __call__(self, x, bias=None):
    _check_nhwc('SimAM', x, self.channels)
    n = max(x.shape[1] * x.shape[2] - 1, 1)
    xf = x.astype(jnp.float32)
    d = jnp.square(xf - jnp.mean(xf, axis=(1, 2), keepdims=True))
    e = d / (4.0 * (jnp.sum(d, axis=(1, 2), keepdims=True) / n + self.lam)) + 0.5
    return _add_bias(x, bias) * jax.nn.sigmoid(e).astype(x.dtype)


ATTENTIONS: dict[str, Callable[..., nn.Module]] = {
    'none': Identity,
    'pfca': PFCA,
    'se': SE,
    'eca': ECA,
    'simam': SimAM,
}


def get_attention(name: str, options: Mapping[str, Any] | None = None) -> Callable[..., nn.Module]:
  """Returns a factory for attention `name` with `options` bound, validating both now."""
  if name not in ATTENTIONS:
    raise ValueError(f'unknown attention {name!r}; valid: {", ".join(ATTENTIONS)}')
  cls = ATTENTIONS[name]
  options = dict(options or {})
  valid = [f for f in cls.__dataclass_fields__ if f not in ('parent', 'name', 'channels')]
  unknown = sorted(set(options) - set(valid))
  if unknown:
    raise ValueError(f'unknown option(s) {unknown} for attention {name!r}; valid: {valid or "none"}')
  cls(**options)  # Runs the module's own value checks before any tracing.
  return functools.partial(cls, **options)
