"""The attention modules against independent NumPy implementations of CONVENTIONS section 1."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pfca_jax.models import attention as att


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


SHAPES = [(2, 7, 5, 16), (1, 8, 8, 3), (3, 1, 1, 4), (1, 1, 1, 2), (4, 6, 9, 64)]


def _random(shape, seed=0, dtype=jnp.float32):
  # A per-channel offset makes channel means differ, so the attention is not trivially uniform.
  rng = np.random.default_rng(seed)
  x = rng.normal(size=shape) + rng.normal(size=shape[-1]) * 2
  return jnp.asarray(x, dtype)


@pytest.mark.parametrize('shape', SHAPES)
@pytest.mark.parametrize('variance', att.VARIANCES)
def test_pfca_matches_numpy_float32(shape, variance):
  x = _random(shape)
  module = att.PFCA(variance=variance)
  y = module.apply({}, x)
  assert y.dtype == jnp.float32 and y.shape == shape
  np.testing.assert_allclose(y, np_pfca(x, variance=variance), rtol=2e-5, atol=1e-6)


def test_pfca_variance_modes_differ_and_lam_matters():
  x = _random((2, 4, 4, 8))
  unbiased = att.PFCA().apply({}, x)
  biased = att.PFCA(variance='biased').apply({}, x)
  assert not np.allclose(unbiased, biased)
  np.testing.assert_allclose(att.PFCA(lam=0.5).apply({}, x), np_pfca(x, lam=0.5), rtol=2e-5, atol=1e-6)


@pytest.mark.parametrize('shape', SHAPES)
@pytest.mark.parametrize('variance', att.VARIANCES)
def test_pfca_bfloat16(shape, variance):
  x = _random(shape, dtype=jnp.bfloat16)
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


@pytest.mark.parametrize('variance', att.VARIANCES)
def test_pfca_weights_exact_for_large_nearly_equal_means(variance):
  # Channel means of 1000 +- 0.01: sums of u and u^2 in float32 would lose the variance (1e-4)
  # to cancellation (1000^2 * 6e-8 = 0.06); the one-pass sums of shifted values must not.
  rng = np.random.default_rng(3)
  u32 = (1000.0 + 0.01 * rng.normal(size=(3, 64))).astype(np.float32)
  u = u32.astype(np.float64)  # The reference sees exactly the float32 inputs.
  ddof = 1 if variance == 'unbiased' else 0
  d = (u - u.mean(-1, keepdims=True)) ** 2
  expected = sigmoid(d / (4 * (u.var(-1, ddof=ddof, keepdims=True) + 1e-4)) + 0.5)
  got = att.pfca_weights(jnp.asarray(u32), 1e-4, variance)
  np.testing.assert_allclose(got, expected, rtol=2e-5)


def test_pfca_has_no_params_and_no_state():
  variables = att.PFCA().init(jax.random.key(0), _random((2, 4, 4, 8)))
  assert variables.get('params', {}) == {}
  assert jax.tree_util.tree_leaves(variables) == []


@pytest.mark.parametrize('shape', [(2, 5, 3, 6), (1, 1, 1, 2)])
def test_pfca_gradients_finite_including_constant_input(shape):
  f = lambda x: jnp.sum(att.PFCA().apply({}, x) ** 2)
  for x in (_random(shape), jnp.ones(shape), jnp.zeros(shape)):
    g = jax.grad(f)(x)
    chex.assert_tree_all_finite(g)
    assert g.shape == shape
  # A constant map has var = 0: lam keeps e = 0.5 rather than 0 / 0.
  np.testing.assert_allclose(att.PFCA().apply({}, jnp.ones(shape)), sigmoid(0.5) * np.ones(shape), rtol=1e-6)


def test_descriptor_derivative_is_exact():
  # On the CPU PFCA's (N, C) derivative goes through a product with I: it must change no bit.
  a = jax.random.normal(jax.random.key(0), (8, 64)) * jnp.logspace(-20, 20, 64)
  value, tangent = jax.jvp(att.descriptor, (a,), (a,))
  assert (value == a).all() and (tangent == a).all()
  assert (jax.grad(lambda u: jnp.vdot(att.descriptor(u), a))(a) == a).all()


@pytest.mark.parametrize('variance', att.VARIANCES)
def test_pfca_derivatives_match_textbook_form(variance):
  # Reverse and forward mode of the module (its descriptor's derivative computed apart, the statistics
  # from one level of sums) against JAX's derivatives of the two-pass formula written out.
  def textbook(x):
    u = jnp.mean(x, axis=(1, 2))
    d = jnp.square(u - jnp.mean(u, axis=1, keepdims=True))
    var = jnp.sum(d, axis=1, keepdims=True) / (u.shape[1] - (variance == 'unbiased'))
    return x * jax.nn.sigmoid(d / (4 * (var + 1e-4)) + 0.5)[:, None, None, :]

  module = lambda x: att.PFCA(variance=variance).apply({}, x)
  x, weights, direction = (_random((2, 5, 4, 16), seed) for seed in (0, 1, 2))
  grads = [jax.grad(lambda x: jnp.vdot(f(x), weights))(x) for f in (module, textbook)]
  tangents = [jax.jvp(f, (x,), (direction,))[1] for f in (module, textbook)]
  # The attention's share of the gradient must be visible: not just x's own scaling.
  assert float(jnp.abs(grads[1] - jax.grad(lambda x: jnp.vdot(x * 0.7, weights))(x)).max()) > 0.05
  np.testing.assert_allclose(grads[0], grads[1], rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(tangents[0], tangents[1], rtol=1e-4, atol=1e-5)


def test_pfca_weights_derivative_packs_its_sums_over_channels():
  # The written-out derivative takes its sums over C two at a time: three reductions in a forward and
  # backward pass. JAX's own derivative of the same formula took six, and XLA runs each as a separate
  # small step on the CPU.
  u, g = _random((4, 32), 0), _random((4, 32), 1)
  for variance in att.VARIANCES:
    jaxpr = jax.make_jaxpr(lambda u, g: jax.vjp(lambda u: att.pfca_weights(u, 1e-4, variance), u)[1](g))(u, g)
    assert str(jaxpr).count('reduce_sum') <= 3


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
  x = _random(shape)
  np.testing.assert_allclose(att.SimAM().apply({}, x), np_simam(x), rtol=2e-5, atol=1e-6)
  assert att.SimAM().init(jax.random.key(0), x) == {}


def test_simam_one_by_one_map_is_finite():
  x = _random((2, 1, 1, 5))
  np.testing.assert_allclose(att.SimAM().apply({}, x), np.asarray(x) * sigmoid(0.5), rtol=1e-6)


def test_simam_bfloat16():
  x = _random((2, 6, 5, 8), dtype=jnp.bfloat16)
  y = att.SimAM().apply({}, x)
  assert y.dtype == jnp.bfloat16
  np.testing.assert_allclose(np.asarray(y, np.float32), np_simam(np.asarray(x, np.float32)), rtol=1.6e-2, atol=1e-2)


@pytest.mark.parametrize('c', [16, 64, 256])
def test_se_matches_numpy_and_counts(c):
  x = _random((2, 5, 4, c))
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
  x = _random((2, 3, 4, c))
  module = att.ECA()
  p = module.init(jax.random.key(0), x)['params']
  k = att.eca_kernel_size(c)
  assert p['conv']['kernel'].shape == (k, 1, 1) and set(p['conv']) == {'kernel'}  # No bias.
  kernel = jnp.arange(1.0, k + 1.0).reshape(k, 1, 1) / k  # Asymmetric: catches a flipped kernel.
  np.testing.assert_allclose(module.apply({'params': {'conv': {'kernel': kernel}}}, x), np_eca(x, kernel),
                             rtol=2e-5, atol=1e-5)


def test_identity_is_identity():
  x = _random((2, 3, 3, 4))
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
  x = _random((2, 3, 3, 4))
  np.testing.assert_allclose(factory().apply({}, x), np_pfca(x, lam=0.5, variance='biased'), rtol=2e-5, atol=1e-6)


@pytest.mark.parametrize('name', list(att.ATTENTIONS))
def test_folded_bias_equals_added_bias(name):
  # module(x, bias=b) must be module(x + b) with the same derivatives for x, b and the parameters:
  # MSRResNet passes conv2's bias this way (models/msrresnet.py).
  x = 2.0 * _random((2, 5, 4, 8)) + 1.0
  bias = jax.random.normal(jax.random.key(7), (8,))
  module = att.ATTENTIONS[name](channels=8)
  variables = module.init(jax.random.key(1), x)
  folded = lambda v, x, b: module.apply(v, x, bias=b)
  added = lambda v, x, b: module.apply(v, x + b)
  np.testing.assert_allclose(folded(variables, x, bias), added(variables, x, bias), rtol=1e-5, atol=1e-5)
  weights = jax.random.normal(jax.random.key(2), x.shape)
  grads = [jax.jit(jax.grad(lambda *a: jnp.sum(f(*a) * weights), argnums=(0, 1, 2)))(variables, x, bias)
           for f in (folded, added)]
  chex.assert_trees_all_close(grads[0], grads[1], rtol=1e-4, atol=1e-5)


def test_folded_bias_in_bfloat16_keeps_dtypes():
  x = _random((2, 4, 4, 8)).astype(jnp.bfloat16)
  bias = jax.random.normal(jax.random.key(7), (8,))  # A float32 parameter, as the convolution's.
  y, vjp = jax.vjp(lambda x, b: att.PFCA().apply({}, x, bias=b), x, bias)
  assert y.dtype == jnp.bfloat16
  dx, db = vjp(jnp.ones_like(y))
  assert (dx.dtype, db.dtype) == (jnp.bfloat16, jnp.float32)
  np.testing.assert_allclose(y.astype(np.float32), np_pfca(x.astype(np.float32) + bias.astype(jnp.bfloat16)),
                             rtol=2e-2, atol=2e-2)


def test_folded_bias_has_forward_mode_derivatives():
  x = _random((2, 4, 3, 6))
  bias = jax.random.normal(jax.random.key(7), (6,))
  tangents = (jax.random.normal(jax.random.key(8), x.shape), jax.random.normal(jax.random.key(9), (6,)))
  folded = jax.jvp(lambda x, b: att.PFCA().apply({}, x, bias=b), (x, bias), tangents)
  added = jax.jvp(lambda x, b: att.PFCA().apply({}, x + b), (x, bias), tangents)
  chex.assert_trees_all_close(folded, added, rtol=1e-4, atol=1e-5)
