"""BatchNorm, optionally followed by PFCA as one module: the same function, fewer passes over the activation.

PFCA after a BatchNorm needs the spatial mean of the BN output per (sample, channel). BN is affine
per channel, so that mean is BN's affine applied to the spatial mean of its *input*, which BN's own
statistics are made of: the per-(n, c) spatial sums of x and x^2 give BN's batch mean and variance
(reduced once more over n) and PFCA's descriptor u together. PFCA's rescale then folds into BN's
affine, giving one per-(n, c) multiply-add:

    mul = scale / sqrt(var + eps)                        # BN, per channel
    u   = (mean_hw(x) - mean) * mul + bias               # = mean_hw(BN(x)), per (n, c)
    a   = sigmoid(PFCA energy of u)                      # per (n, c)
    y   = x * (mul * a) + (bias - mean * mul) * a        # = PFCA(BN(x))

So the activation is read once for the statistics and once for the output, as for BN alone, instead
of BN's two passes plus PFCA's reduction and rescale. Variables (`scale`, `bias`, `mean`, `var`) and
their updates are those of `flax.linen.BatchNorm` (fast variance, clipped at zero, momentum as
given), so checkpoints are interchangeable with the unfused pair; outputs agree within float32
rounding (tests/test_fast_layer.py).

Without PFCA (`pfca=False`) the module is a plain BatchNorm computed the same way: statistics from
per-(n, c) spatial sums and the output as one multiply-add per element. The fast layer uses it for
every BatchNorm of a ResNet, as it trains faster on the CPU than `nn.BatchNorm`
(experiments/results/speed.md, "Lean BatchNorm and BatchNorm+PFCA fusion").
"""

from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from pfca_jax.models.attention import PFCA
from pfca_jax.models.fast.attention import descriptor, pfca_weights


def _gains(s1, mean2, scale, bias, ra_mean, ra_var, *, train, epsilon, pfca, lam, variance):
  """The small (N, C) part: BN statistics, PFCA weights, and the per-(n, c) gain and shift."""
  if train:
    mean = jnp.mean(s1, axis=0)
    var = jnp.maximum(0.0, mean2 - jnp.square(mean))
  else:
    mean, var = ra_mean, ra_var
  mul = scale * jax.lax.rsqrt(var + epsilon)
  if not pfca:
    return mul[None], (bias - mean * mul)[None], mean, var
  # The per-channel values broadcast once, stacked, so that the backward pass sums their cotangents
  # over n in one reduction rather than once per use (five reductions, each a small step of XLA's CPU
  # runtime).
  mul_n, mean_n, bias_n = jnp.broadcast_to(jnp.stack([mul, mean, bias])[:, None], (3,) + s1.shape)
  a = pfca_weights((s1 - mean_n) * mul_n + bias_n, lam, variance)  # Of u = the spatial mean of BN's output.
  return mul_n * a, (bias_n - mean_n * mul_n) * a, mean, var


class BatchNorm(nn.Module):
  """`nn.BatchNorm(...)` over NHWC input, then (`pfca=True`) `PFCA(lam, variance)`, computed together.

  The backward pass is JAX's: a hand-written one (a custom_vjp reading the activation once for the
  per-(n, c) sums of g and g*x and once for dx) keeps XLA from fusing across it, which made the step
  slower (experiments/results/speed.md).
  """
  use_running_average: bool = False
  momentum: float = 0.99
  epsilon: float = 1e-5
  dtype: Any = None
  scale_init: Callable = nn.initializers.ones
  bias_init: Callable = nn.initializers.zeros
  pfca: bool = False
  lam: float = 1e-4
  variance: str = 'unbiased'

  @nn.compact
  def __call__(self, x):
    if self.pfca:
      PFCA(lam=self.lam, variance=self.variance, channels=x.shape[-1])  # Validates the options.
    c = x.shape[-1]
    ra_mean = self.variable('batch_stats', 'mean', lambda: jnp.zeros((c,), jnp.float32))
    ra_var = self.variable('batch_stats', 'var', lambda: jnp.ones((c,), jnp.float32))
    scale = self.param('scale', self.scale_init, (c,), jnp.float32)
    bias = self.param('bias', self.bias_init, (c,), jnp.float32)
    train = not self.use_running_average
    s1 = jnp.mean(x, axis=(1, 2), dtype=jnp.float32)  # (N, C): PFCA's raw descriptor and BN's sums.
    if self.pfca:
      s1 = descriptor(s1)
    mean2 = jnp.mean(jnp.square(x.astype(jnp.float32)), axis=(0, 1, 2)) if train else None
    gain, shift, mean, var = _gains(s1, mean2, scale, bias, ra_mean.value, ra_var.value, train=train,
                                    epsilon=self.epsilon, pfca=self.pfca, lam=self.lam, variance=self.variance)
    dtype = self.dtype or x.dtype
    y = x.astype(dtype) * gain.astype(dtype)[:, None, None, :] + shift.astype(dtype)[:, None, None, :]
    if train and not self.is_initializing():
      ra_mean.value = self.momentum * ra_mean.value + (1 - self.momentum) * mean
      ra_var.value = self.momentum * ra_var.value + (1 - self.momentum) * var
    return y

