"""Max pooling as a maximum over strided views, with a gradient that needs no index tensors (on the CPU).

XLA's CPU backend differentiates `lax.reduce_window` max (`nn.max_pool`) by building four int32
index tensors of the padded input and a variadic reduce-window over them, a noticeable part of a
ResNet-50 step for a layer with no FLOPs to speak of (experiments/results/speed.md, "Index-free max
pool"). Here the forward is an elementwise maximum over the window's kh*kw strided views, and the
backward sends each output's gradient to the first position of its window (row-major) that holds
the maximum: the same choice as XLA's select-and-scatter. Outputs are identical; gradients equal
within float rounding (overlapping windows add their shares in another order). Programs compiled
for other platforms use `nn.max_pool` (`max_pool_for_platform`).
"""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp

from pfca_jax.models.fast.platform import for_platform


def _views(xp, window, strides, out_hw):
  """The (i, j) strided view of the padded input for every window tap, in row-major tap order."""
  (kh, kw), (sh, sw), (ho, wo) = window, strides, out_hw
  return [xp[:, i:i + sh * (ho - 1) + 1:sh, j:j + sw * (wo - 1) + 1:sw] for i in range(kh) for j in range(kw)]


def _geometry(shape, window, strides, padding):
  _, h, w, _ = shape
  (kh, kw), (sh, sw), (ph, pw) = window, strides, padding
  return (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1


def max_pool(x, window_shape, strides, padding):
  """`nn.max_pool` for NHWC `x` and explicit symmetric padding ((ph, ph), (pw, pw))."""
  (top, bottom), (left, right) = padding
  if top != bottom or left != right:
    raise ValueError(f'max_pool takes symmetric padding, got {padding}')
  return _max_pool(x, tuple(window_shape), tuple(strides), (top, left))


def max_pool_for_platform(x, window_shape, strides, padding):
  """`max_pool` in a program compiled for the CPU, `nn.max_pool` elsewhere."""
  return for_platform(lambda t: max_pool(t, window_shape, strides, padding),
                      lambda t: nn.max_pool(t, window_shape, strides=strides, padding=padding), x)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2, 3))
def _max_pool(x, window, strides, padding):
  return _forward(x, window, strides, padding)[0]


def _forward(x, window, strides, padding):
  (ph, pw) = padding
  xp = jnp.pad(x, ((0, 0), (ph, ph), (pw, pw), (0, 0)), constant_values=-jnp.inf)
  views = _views(xp, window, strides, _geometry(x.shape, window, strides, padding))
  return functools.reduce(jnp.maximum, views), xp


def _fwd(x, window, strides, padding):
  y, xp = _forward(x, window, strides, padding)
  return y, (xp, y)


def _bwd(window, strides, padding, residuals, dy):
  xp, y = residuals
  (sh, sw), (ph, pw) = strides, padding
  _, hp, wp, _ = xp.shape
  ho, wo = y.shape[1:3]
  taken = jnp.zeros(y.shape, bool)
  dxp = jnp.zeros(xp.shape, dy.dtype)
  for t, view in enumerate(_views(xp, window, strides, (ho, wo))):
    i, j = divmod(t, window[1])
    hit = (view == y) & ~taken
    taken = taken | hit
    # Interior padding puts each output's share back on its strided position of the padded input.
    config = ((0, 0, 0), (i, hp - i - sh * (ho - 1) - 1, sh - 1), (j, wp - j - sw * (wo - 1) - 1, sw - 1), (0, 0, 0))
    dxp = dxp + jax.lax.pad(jnp.where(hit, dy, 0), jnp.zeros((), dy.dtype), config)
  return (dxp[:, ph:hp - ph, pw:wp - pw],)


_max_pool.defvjp(_fwd, _bwd)
