"""NumPy float64 definitions of the attention modules (docs/attention.md), and the feature maps the
attention tests feed them: one copy, imported by test_attention.py and test_fast_attention.py."""

import jax.numpy as jnp
import numpy as np


def sigmoid(z):
  return 1.0 / (1.0 + np.exp(-z))


def np_pfca(x, lam=1e-4, variance='unbiased'):
  x = np.asarray(x, np.float64)
  u = x.mean(axis=(1, 2))                                   # (N, C)
  mu = u.mean(axis=1, keepdims=True)
  ddof = 1 if variance == 'unbiased' else 0
  var = u.var(axis=1, ddof=ddof, keepdims=True)
  e = (u - mu) ** 2 / (4 * (var + lam)) + 0.5
  return x * sigmoid(e)[:, None, None, :]


def np_simam(x, lam=1e-4):
  x = np.asarray(x, np.float64)
  n = x.shape[1] * x.shape[2] - 1
  d = (x - x.mean(axis=(1, 2), keepdims=True)) ** 2
  e = d / (4 * (d.sum(axis=(1, 2), keepdims=True) / n + lam)) + 0.5
  return x * sigmoid(e)


def np_se(x, p):
  x = np.asarray(x, np.float64)
  s = x.mean(axis=(1, 2))
  h = np.maximum(s @ np.asarray(p['fc1']['kernel'], np.float64) + np.asarray(p['fc1']['bias']), 0)
  a = sigmoid(h @ np.asarray(p['fc2']['kernel'], np.float64) + np.asarray(p['fc2']['bias']))
  return x * a[:, None, None, :]


def np_eca(x, kernel):
  x = np.asarray(x, np.float64)
  w = np.asarray(kernel, np.float64).reshape(-1)
  k, c = len(w), x.shape[-1]
  s = np.pad(x.mean(axis=(1, 2)), ((0, 0), ((k - 1) // 2, (k - 1) // 2)))
  # Cross-correlation, as PyTorch's Conv1d computes it.
  a = np.stack([(s[:, i:i + k] * w).sum(axis=1) for i in range(c)], axis=1)
  return x * sigmoid(a)[:, None, None, :]


def random_map(shape, seed=0, dtype=jnp.float32):
  """Normal values plus a per-channel offset, so channel means differ and no attention is trivially uniform."""
  rng = np.random.default_rng(seed)
  x = rng.normal(size=shape) + rng.normal(size=shape[-1]) * 2
  return jnp.asarray(x, dtype)
