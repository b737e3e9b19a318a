"""Channel attention modules, as defined: PFCA and the attentions it is compared with.

These are the reference definitions, written to be read: plain JAX, no custom derivatives, nothing
that depends on the backend. Each maps an NHWC feature map to one of the same shape and dtype, and
takes an optional ``channels`` so that a network that knows its widths has a bad width rejected when
the module is built rather than when it is traced. The networks run these modules as they are with
``attention_impl='reference'``; the default ``'fast'`` swaps in the equivalent modules of
``pfca_jax/models/fast/`` where it has one (tested equal to these). docs/attention.md shows how to
add your own attention.
"""

import functools
import math
from typing import Any, Callable, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp

VARIANCES = ('unbiased', 'biased')


# Each attention's formula is a function of the map (and of its layers, for SE and ECA), so that the
# flax.nnx modules of pfca_jax/nnx.py compute it with the same code as the linen modules here.
def pfca(x: jax.Array, lam: float = 1e-4, variance: str = 'unbiased') -> jax.Array:
  """PFCA (the class below) on an NHWC map."""
  c = check_min_channels(x.shape[-1])
  u = jnp.mean(x, axis=(1, 2), dtype=jnp.float32)             # (N, C): the channel descriptor
  mu = jnp.mean(u, axis=-1, keepdims=True)                     # (N, 1)
  d = jnp.square(u - mu)
  var = jnp.sum(d, axis=-1, keepdims=True) / (c - 1 if variance == 'unbiased' else c)
  e = d / (4.0 * (var + lam)) + 0.5                             # (N, C): each channel's energy
  return x * jax.nn.sigmoid(e).astype(x.dtype)[:, None, None, :]


class PFCA(nn.Module):
  """Parameter-free channel attention.

  With u the per-channel spatial mean, mu and var the mean and variance of u over
  channels:  e = (u - mu)^2 / (4 (var + lam)) + 0.5,  y = x * sigmoid(e).

  Since e >= 0.5 every channel keeps at least sigmoid(0.5) ~ 0.62 of its value, and
  channels far from the channel mean in either direction are emphasised. The
  statistics are computed in float32 whatever the input dtype; only the final
  rescale runs in the input dtype. After a BatchNorm whose scale starts at zero it
  sees an all-zero map at step 0: then var = 0, e = 0.5 and it outputs zeros, which is harmless.

  Attributes:
    lam: the regulariser added to the variance (> 0, so that channels with equal means give e = 0.5, not NaN).
    variance: 'unbiased' divides the sum of squares by C - 1, 'biased' by C.
    channels: the expected C, checked when given. C < 2 is rejected: one channel has no variance.
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
      check_min_channels(self.channels)
    super().__post_init__()

  @nn.compact
  def __call__(self, x):
    check_nhwc('PFCA', x, self.channels)
    return pfca(x, self.lam, self.variance)


def se(x: jax.Array, fc1: Callable, fc2: Callable) -> jax.Array:
  """SE (the class below) on an NHWC map, with its two Dense layers given as functions."""
  s = jnp.mean(x, axis=(1, 2), dtype=jnp.float32).astype(x.dtype)
  s = jax.nn.sigmoid(fc2(jax.nn.relu(fc1(s))))
  return x * s[:, None, None, :]


class SE(nn.Module):
  """Squeeze-and-excitation: GAP -> Dense(C // r) -> ReLU -> Dense(C) -> sigmoid -> scale.

  Both Dense layers have biases (Hu et al.; timm's SE-ResNet). The hidden width is
  max(1, C // reduction), so that a narrow layer never gets a zero-width bottleneck.
  Computes in the input dtype; parameters are float32.
  """
  reduction: int = 16
  channels: int | None = None

  def __post_init__(self):
    if not (isinstance(self.reduction, int) and self.reduction >= 1):
      raise ValueError(f'SE reduction={self.reduction!r} must be a positive integer')
    super().__post_init__()

  @nn.compact
  def __call__(self, x):
    check_nhwc('SE', x, self.channels)
    c = x.shape[-1]
    fc1 = nn.Dense(max(1, c // self.reduction), dtype=x.dtype, name='fc1')
    fc2 = nn.Dense(c, dtype=x.dtype, name='fc2')
    return se(x, fc1, fc2)


def eca_kernel_size(channels: int, gamma: int = 2, b: int = 1) -> int:
  """ECA's adaptive kernel size: the odd number nearest above |(log2 C + b) / gamma|."""
  t = int(abs((math.log2(channels) + b) / gamma))
  return t if t % 2 else t + 1


def eca(x: jax.Array, conv: Callable) -> jax.Array:
  """ECA (the class below) on an NHWC map, with its convolution given as a function of (N, C, 1)."""
  s = jnp.mean(x, axis=(1, 2), dtype=jnp.float32).astype(x.dtype)
  # Channels become the 1-D "length" axis with a single feature.
  s = conv(s[..., None])[..., 0]
  return x * jax.nn.sigmoid(s)[:, None, None, :]


class ECA(nn.Module):
  """Efficient channel attention: GAP -> 1-D conv across channels (no bias) -> sigmoid -> scale.

  The kernel size k = eca_kernel_size(C) is fixed by C, so ECA adds k parameters.
  """
  channels: int | None = None

  @nn.compact
  def __call__(self, x):
    check_nhwc('ECA', x, self.channels)
    k = eca_kernel_size(x.shape[-1])
    return eca(x, nn.Conv(1, (k,), padding=(k - 1) // 2, use_bias=False, dtype=x.dtype, name='conv'))


def simam(x: jax.Array, lam: float = 1e-4) -> jax.Array:
  """SimAM (the class below) on an NHWC map."""
  n = max(x.shape[1] * x.shape[2] - 1, 1)
  xf = x.astype(jnp.float32)
  d = jnp.square(xf - jnp.mean(xf, axis=(1, 2), keepdims=True))
  e = d / (4.0 * (jnp.sum(d, axis=(1, 2), keepdims=True) / n + lam)) + 0.5
  return x * jax.nn.sigmoid(e).astype(x.dtype)


class SimAM(nn.Module):
  """SimAM: the same energy as PFCA, but over the pixels of each channel.

  d = (x - mean_hw x)^2,  e = d / (4 (sum_hw d / (H W - 1) + lam)) + 0.5,  y = x * sigmoid(e).

  For a 1x1 map the reference divides 0 by 0; here H W - 1 is floored at 1, which
  gives d = 0 and e = 0.5, the limit the formula has for any constant map.
  """
  lam: float = 1e-4
  channels: int | None = None

  def __post_init__(self):
    if not self.lam > 0:
      raise ValueError(f'SimAM lam={self.lam!r} must be > 0')
    super().__post_init__()

  @nn.compact
  def __call__(self, x):
    check_nhwc('SimAM', x, self.channels)
    return simam(x, self.lam)


class Identity(nn.Module):
  """The `none` attention: returns its input, so that every variant shares one code path."""
  channels: int | None = None

  @nn.compact
  def __call__(self, x):
    check_nhwc('none', x, self.channels)
    return x


# The registry: a name selects a module class. A new attention is one class and one entry here.
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
  if unknown and not valid:
    raise ValueError(f'attention {name!r} takes no options, got {sorted(options)}; leave attention_options empty')
  if unknown:
    raise ValueError(f'unknown option(s) {unknown} for attention {name!r}; valid: {valid}')
  cls(**options)  # Runs the module's own value checks before any tracing.
  return functools.partial(cls, **options)


def check_nhwc(name: str, x: jax.Array, channels: int | None) -> None:
  if x.ndim != 4:
    raise ValueError(f'{name} expects an NHWC feature map (4 dims), got shape {x.shape}')
  if channels is not None and x.shape[-1] != channels:
    raise ValueError(f'{name} was built for channels={channels} but got input with {x.shape[-1]} channels')


def check_min_channels(c: int) -> int:
  if c < 2:
    raise ValueError(f'PFCA needs at least 2 channels to compute a channel variance, got C={c}')
  return c
