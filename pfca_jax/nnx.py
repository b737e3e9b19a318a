"""PFCA and the attentions it is compared with, as flax.nnx modules.

Each module here computes its linen definition's function (pfca_jax/models/attention.py) with the
same code, takes the same options and refuses the same values in the same words. NNX creates weights
when a module is constructed, so SE and ECA take `channels` and `rngs` then. Their weights have the
linen names and shapes (`SE(...).fc1.kernel` is linen's `params['fc1']['kernel']`, of shape
(C, max(1, C // reduction))), so `nnx.update(module, linen_variables['params'])` loads weights trained
with linen. PFCA and SimAM hold no state, and check `channels` only where it is given.
docs/models.md shows them in an NNX model.
"""

from flax import nnx

from pfca_jax.models import attention


def _in_input_dtype(arrays, *, dtype=None, inexact=True):
  # nnx.Linear and nnx.Conv call this to cast (input, kernel, bias): the linen modules compute in
  # their input's dtype (a bfloat16 map gets bfloat16 products) while the weights stay float32.
  del dtype, inexact  # These layers are built without a dtype, so there is nothing to override.
  return tuple(None if a is None else a.astype(arrays[0].dtype) for a in arrays)


def _check_channels(name: str, channels) -> int:
  if not (isinstance(channels, int) and channels >= 1):
    raise ValueError(f'{name} channels={channels!r} must be a positive integer: NNX creates its weights '
                     f'when the module is built')
  return channels


class PFCA(nnx.Module):
  """Parameter-free channel attention; the formula and options are those of attention.PFCA."""

  def __init__(self, lam: float = 1e-4, variance: str = 'unbiased', channels: int | None = None):
    attention.PFCA(lam=lam, variance=variance, channels=channels)  # Its checks, so both refuse alike.
    self.lam, self.variance, self.channels = lam, variance, channels

  def __call__(self, x):
    attention.check_nhwc('PFCA', x, self.channels)
    return attention.pfca(x, self.lam, self.variance)


class SE(nnx.Module):
  """Squeeze-and-excitation (attention.SE): `fc1` to max(1, C // reduction) features, then `fc2` back to C."""

  def __init__(self, channels: int, reduction: int = 16, *, rngs: nnx.Rngs):
    attention.SE(reduction=reduction, channels=channels)
    self.channels = _check_channels('SE', channels)
    hidden = max(1, channels // reduction)
    self.fc1 = nnx.Linear(channels, hidden, promote_dtype=_in_input_dtype, rngs=rngs)
    self.fc2 = nnx.Linear(hidden, channels, promote_dtype=_in_input_dtype, rngs=rngs)

  def __call__(self, x):
    attention.check_nhwc('SE', x, self.channels)
    return attention.se(x, self.fc1, self.fc2)


class ECA(nnx.Module):
  """Efficient channel attention (attention.ECA): `conv` has eca_kernel_size(channels) weights, no bias."""

  def __init__(self, channels: int, *, rngs: nnx.Rngs):
    self.channels = _check_channels('ECA', channels)
    k = attention.eca_kernel_size(channels)
    self.conv = nnx.Conv(1, 1, (k,), padding=(k - 1) // 2, use_bias=False, promote_dtype=_in_input_dtype,
                         rngs=rngs)

  def __call__(self, x):
    attention.check_nhwc('ECA', x, self.channels)
    return attention.eca(x, self.conv)


class SimAM(nnx.Module):
  """SimAM (attention.SimAM): PFCA's energy over the pixels of each channel, no state."""

  def __init__(self, lam: float = 1e-4, channels: int | None = None):
    attention.SimAM(lam=lam, channels=channels)
    self.lam, self.channels = lam, channels

  def __call__(self, x):
    attention.check_nhwc('SimAM', x, self.channels)
    return attention.simam(x, self.lam)
