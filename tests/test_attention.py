"""The attention modules against independent NumPy implementations of their definitions (docs/attention.md)."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from attention_references import np_eca, np_pfca, np_se, np_simam, random_map, sigmoid

from pfca_jax.models import attention as att


SHAPES = [(2, 7, 5, 16), (1, 8, 8, 3), (3, 1, 1, 4), (1, 1, 1, 2), (4, 6, 9, 64)]


@pytest.mark.parametrize('shape', SHAPES)
@pytest.mark.parametrize('variance', att.VARIANCES)
def test_pfca_matches_numpy_float32(shape, variance):
  x = random_map(shape)
  module = att.PFCA(variance=variance)
  y = module.apply({}, x)
  assert y.dtype == jnp.float32 and y.shape == shape
  np.testing.assert_allclose(y, np_pfca(x, variance=variance), rtol=2e-5, atol=1e-6)


def test_pfca_variance_modes_differ_and_lam_matters():
  x = random_map((2, 4, 4, 8))
  unbiased = att.PFCA().apply({}, x)
  biased = att.PFCA(variance='biased').apply({}, x)
  assert not np.allclose(unbiased, biased)
  np.testing.assert_allclose(att.PFCA(lam=0.5).apply({}, x), np_pfca(x, lam=0.5), rtol=2e-5, atol=1e-6)


@pytest.mark.parametrize('shape', SHAPES)
@pytest.mark.parametrize('variance', att.VARIANCES)
def test_pfca_bfloat16(shape, variance):
  x = random_map(shape, dtype=jnp.bfloat16)
  y = att.PFCA(variance=variance).apply({}, x)
  assert y.dtype == jnp.bfloat16
  ref = np_pfca(np.asarray(x, np.float32), variance=variance)
  # One bf16 rounding of the scale and one of the product.
  np.testing.assert_allclose(np.asarray(y, np.float32), ref, rtol=1.6e-2, atol=1e-2)


def test_pfca_statistics_are_float32_under_bfloat16():
  # Channel c has a fraction c/8 of its pixels at 16.125 and the rest at 16 (both
  # exact in bf16), so its mean is 16 + c/64: between bf16's neighbours 16 and
  # 16.125. Means rounded to bf16 would collapse the channels onto two values.
  c = 8
  x = np.full((1, 8, 8, c), 16.0, np.float32)
  for ch in range(c):
    x[0, :ch, :, ch] = 16.125
  xb = jnp.asarray(x, jnp.bfloat16)
  assert np.array_equal(np.asarray(xb, np.float32), x)
  u = 16.0 + np.arange(c) / 64.0
  expected = sigmoid((u - u.mean()) ** 2 / (4 * (u.var(ddof=1) + 1e-4)) + 0.5)
  y = att.PFCA().apply({}, xb)
  np.testing.assert_allclose(np.asarray(y, np.float32)[0, -1, 0] / 16.0, expected, rtol=4e-3)


def test_pfca_has_no_params_and_no_state():
  variables = att.PFCA().init(jax.random.key(0), random_map((2, 4, 4, 8)))
  assert variables.get('params', {}) == {}
  assert jax.tree_util.tree_leaves(variables) == []


@pytest.mark.parametrize('shape', [(2, 5, 3, 6), (1, 1, 1, 2)])
def test_pfca_gradients_finite_including_constant_input(shape):
  f = lambda x: jnp.sum(att.PFCA().apply({}, x) ** 2)
  for x in (random_map(shape), jnp.ones(shape), jnp.zeros(shape)):
    g = jax.grad(f)(x)
    chex.assert_tree_all_finite(g)
    assert g.shape == shape
  # A constant map has var = 0: lam keeps e = 0.5 rather than 0 / 0.
  np.testing.assert_allclose(att.PFCA().apply({}, jnp.ones(shape)), sigmoid(0.5) * np.ones(shape), rtol=1e-6)


def test_pfca_rejects_fewer_than_two_channels():
  with pytest.raises(ValueError, match='at least 2 channels.*C=1'):
    att.PFCA(channels=1)
  with pytest.raises(ValueError, match='at least 2 channels.*C=1'):
    att.PFCA().init(jax.random.key(0), jnp.ones((1, 4, 4, 1)))


@pytest.mark.parametrize('kwargs, message', [
    ({'variance': 'sample'}, "variance='sample' is not one of \\('unbiased', 'biased'\\)"),
    ({'lam': 0.0}, 'lam=0.0 must be > 0'),
])
def test_pfca_rejects_bad_options(kwargs, message):
  with pytest.raises(ValueError, match=message):
    att.PFCA(**kwargs)


@pytest.mark.parametrize('name', list(att.ATTENTIONS))
def test_every_attention_checks_layout_and_channels(name):
  cls = att.ATTENTIONS[name]
  with pytest.raises(ValueError, match='NHWC'):
    cls().init(jax.random.key(0), jnp.ones((4, 8)))
  with pytest.raises(ValueError, match='channels=8 but got input with 6 channels'):
    cls(channels=8).init(jax.random.key(0), jnp.ones((1, 3, 3, 6)))


@pytest.mark.parametrize('shape', [(2, 7, 5, 16), (1, 8, 8, 3), (3, 2, 1, 4)])
def test_simam_matches_numpy(shape):
  x = random_map(shape)
  np.testing.assert_allclose(att.SimAM().apply({}, x), np_simam(x), rtol=2e-5, atol=1e-6)
  assert att.SimAM().init(jax.random.key(0), x) == {}


def test_simam_one_by_one_map_is_finite():
  x = random_map((2, 1, 1, 5))
  np.testing.assert_allclose(att.SimAM().apply({}, x), np.asarray(x) * sigmoid(0.5), rtol=1e-6)


def test_simam_bfloat16():
  x = random_map((2, 6, 5, 8), dtype=jnp.bfloat16)
  y = att.SimAM().apply({}, x)
  assert y.dtype == jnp.bfloat16
  np.testing.assert_allclose(np.asarray(y, np.float32), np_simam(np.asarray(x, np.float32)), rtol=1.6e-2, atol=1e-2)


@pytest.mark.parametrize('c', [16, 64, 256])
def test_se_matches_numpy_and_counts(c):
  x = random_map((2, 5, 4, c))
  module = att.SE()
  variables = module.init(jax.random.key(1), x)
  p = variables['params']
  hidden = c // 16
  assert p['fc1']['kernel'].shape == (c, hidden) and p['fc2']['kernel'].shape == (hidden, c)
  # 2 C (C/16) weights + C/16 + C biases.
  assert sum(v.size for v in jax.tree_util.tree_leaves(p)) == 2 * c * hidden + hidden + c
  # Random biases too, so that a dropped bias would show.
  p = jax.tree_util.tree_map(lambda v: jax.random.normal(jax.random.key(2), v.shape), p)
  np.testing.assert_allclose(module.apply({'params': p}, x), np_se(x, p), rtol=2e-5, atol=1e-5)


def test_se_narrow_layer_keeps_one_hidden_unit():
  p = att.SE().init(jax.random.key(0), jnp.ones((1, 2, 2, 8)))['params']
  assert p['fc1']['kernel'].shape == (8, 1)
  with pytest.raises(ValueError, match='reduction=0'):
    att.SE(reduction=0)


@pytest.mark.parametrize('c, k', [(16, 3), (32, 3), (64, 3), (128, 5), (256, 5), (512, 5), (1024, 5), (2048, 7)])
def test_eca_kernel_size(c, k):
  # t = int(|(log2 C + 1) / 2|), made odd upwards: C=256 -> 4.5 -> 4 -> 5; C=2048 -> 6 -> 7.
  assert att.eca_kernel_size(c) == k


@pytest.mark.parametrize('c', [16, 128, 2048])
def test_eca_matches_numpy(c):
  x = random_map((2, 3, 4, c))
  module = att.ECA()
  p = module.init(jax.random.key(0), x)['params']
  k = att.eca_kernel_size(c)
  assert p['conv']['kernel'].shape == (k, 1, 1) and set(p['conv']) == {'kernel'}  # No bias.
  kernel = jnp.arange(1.0, k + 1.0).reshape(k, 1, 1) / k  # Asymmetric: catches a flipped kernel.
  np.testing.assert_allclose(module.apply({'params': {'conv': {'kernel': kernel}}}, x), np_eca(x, kernel),
                             rtol=2e-5, atol=1e-5)


def test_identity_is_identity():
  x = random_map((2, 3, 3, 4))
  assert att.Identity().init(jax.random.key(0), x) == {}
  np.testing.assert_array_equal(att.Identity().apply({}, x), x)


def test_registry_names_and_errors():
  assert list(att.ATTENTIONS) == ['none', 'pfca', 'se', 'eca', 'simam']
  with pytest.raises(ValueError) as err:
    att.get_attention('cbam')
  assert str(err.value) == "unknown attention 'cbam'; valid: none, pfca, se, eca, simam"
  with pytest.raises(ValueError, match=r"unknown option\(s\) \['reduction'\] for attention 'pfca'; valid: \['lam', 'variance'\]"):
    att.get_attention('pfca', {'reduction': 4})
  with pytest.raises(ValueError, match='lam=-1'):
    att.get_attention('simam', {'lam': -1})
  factory = att.get_attention('pfca', {'lam': 0.5, 'variance': 'biased'})
  x = random_map((2, 3, 3, 4))
  np.testing.assert_allclose(factory().apply({}, x), np_pfca(x, lam=0.5, variance='biased'), rtol=2e-5, atol=1e-6)
