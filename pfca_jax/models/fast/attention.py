"""The attentions of models/attention.py, computed with fewer passes and leaner derivatives.

Each class here subclasses its definition (same fields, checks and parameters) and adds one thing to
its call: `module(x, bias=b)` is `module(x + b)` for a per-channel `b`, the bias of the convolution
before it left unadded. Each module reads its input for a spatial mean (or its deviations from one)
and for the rescale, so x + b would be stored and read again. With per-channel weights (PFCA, SE,
ECA) the bias is folded into the (N, C) values and x + b is never stored; SimAM's weights are per
pixel, and the derivative of its rescale still keeps x + b (only its statistics skip the add).

PFCA's weights come from `pfca_weights`, shared with the fused BatchNorm + PFCA (batchnorm.py): one
pass of sums and a derivative written out (see its docstring). Tests hold every module here equal
to its definition, outputs and gradients (tests/test_fast_layer.py).
"""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp

from pfca_jax.models import attention
from pfca_jax.models.fast.cpu_fusion import unfused


def _add_bias(x, bias):
  return x if bias is None else x + bias.astype(x.dtype)


def _rescale(x, bias, w):
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


def channel_means(x, bias):
  """mean_hw(x + bias) per (n, c) in float32, with the bias added to the (N, C) means, not to x.

  dtype=float32 makes XLA accumulate in float32 inside the reduction rather than materialising a
  float32 copy of a bf16 activation.
  """
  u = jnp.mean(x, axis=(1, 2), dtype=jnp.float32)
  return u if bias is None else u + bias.astype(x.dtype).astype(jnp.float32)


class Identity(attention.Identity):

  @nn.compact
  def __call__(self, x, bias=None):
    attention.check_nhwc('none', x, self.channels)
    return _add_bias(x, bias)


class PFCA(attention.PFCA):

  @nn.compact
  def __call__(self, x, bias=None):
    attention.check_nhwc('PFCA', x, self.channels)
    attention.check_min_channels(x.shape[-1])
    u = descriptor(channel_means(x, bias))
    return _rescale(x, bias, pfca_weights(u, self.lam, self.variance))


class SE(attention.SE):

  @nn.compact
  def __call__(self, x, bias=None):
    attention.check_nhwc('SE', x, self.channels)
    c = x.shape[-1]
    s = channel_means(x, bias).astype(x.dtype)
    s = nn.relu(nn.Dense(max(1, c // self.reduction), dtype=x.dtype, name='fc1')(s))
    s = jax.nn.sigmoid(nn.Dense(c, dtype=x.dtype, name='fc2')(s))
    return _rescale(x, bias, s)


class ECA(attention.ECA):

  @nn.compact
  def __call__(self, x, bias=None):
    attention.check_nhwc('ECA', x, self.channels)
    k = attention.eca_kernel_size(x.shape[-1])
    s = channel_means(x, bias).astype(x.dtype)
    s = nn.Conv(1, (k,), padding=(k - 1) // 2, use_bias=False, dtype=x.dtype, name='conv')(s[..., None])
    return _rescale(x, bias, jax.nn.sigmoid(s[..., 0]))


class SimAM(attention.SimAM):
  # A per-channel bias does not change d (it shifts x and its mean alike), so it is only added to the output.

  @nn.compact
  def __call__(self, x, bias=None):
    attention.check_nhwc('SimAM', x, self.channels)
    n = max(x.shape[1] * x.shape[2] - 1, 1)
    xf = x.astype(jnp.float32)
    d = jnp.square(xf - jnp.mean(xf, axis=(1, 2), keepdims=True))
    e = d / (4.0 * (jnp.sum(d, axis=(1, 2), keepdims=True) / n + self.lam)) + 0.5
    return _add_bias(x, bias) * jax.nn.sigmoid(e).astype(x.dtype)


# Definition -> fast version. Only these exact classes are replaced: a subclass or a new attention
# runs as defined (with its input's bias added first).
FAST_VERSIONS = {attention.Identity: Identity, attention.PFCA: PFCA, attention.SE: SE, attention.ECA: ECA,
                 attention.SimAM: SimAM}


@jax.custom_jvp
def descriptor(u):
  """The identity on PFCA's (N, C) descriptor, whose derivative (and so its backward) is computed apart on the CPU.

  Without it XLA fuses PFCA's whole (N, C) backward (the weights' derivative, sigmoid's included)
  into the full-resolution loop that consumes the descriptor's cotangent, and evaluates it once per
  pixel: in CIFAR ResNets the transposed copy made for a 3x3 weight gradient, in MSRResNet each
  block's input gradient (fusion sizes in experiments/results/speed.md; why a product, in
  cpu_fusion.py).
  """
  return u


@descriptor.defjvp
def _descriptor_jvp(primals, tangents):
  # The tangent map is a product with I, so its transpose (the cotangent) is one too.
  return primals[0], unfused(tangents[0])


@functools.partial(jax.custom_jvp, nondiff_argnums=(1, 2))
def pfca_weights(u: jax.Array, lam: float, variance: str) -> jax.Array:
  """sigmoid(e) of PFCA for channel descriptors u of shape (N, C): the factor each channel is scaled by.

  The channel mean and variance come from one pass of sums (of v and v^2) rather than the textbook
  two (the mean, then squared deviations from it). Same value; but a reduction whose result feeds a
  second reduction over the same axis makes XLA's GPU backend fuse the chain into the surrounding
  full-resolution kernels, which multiplies PFCA's cost there. The sums are of v = u - u[:, :1]:
  shifted by one of the channels, E[v^2] - E[v]^2 has no cancellation when the channel means are
  large and nearly equal (as exact as the two-pass form in float32, tests/test_fast_layer.py).

  Its derivative is written out (`_pfca_weights_jvp`) so that its sums over C are taken two at a
  time, one reduction each way, because XLA's CPU runtime runs every small (N, C) operation as a
  separate step with a fixed cost. Both measured in experiments/results/speed.md, "PFCA's packed-sum
  derivative and one-pass sums".
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
