"""models/fast/attention.py: every fast attention equals its definition, with and without a folded bias."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from attention_references import np_pfca, random_map, sigmoid

from pfca_jax.models import attention as att
from pfca_jax.models.fast import attention as fast


def test_every_attention_has_a_fast_version_with_the_same_fields():
  assert set(fast.FAST_VERSIONS) == set(att.ATTENTIONS.values())
  for definition, version in fast.FAST_VERSIONS.items():
    assert issubclass(version, definition)
    assert version.__dataclass_fields__.keys() == definition.__dataclass_fields__.keys()


@pytest.mark.parametrize('dtype', [jnp.float32, jnp.bfloat16])
@pytest.mark.parametrize('name', list(att.ATTENTIONS))
def test_fast_equals_definition_without_bias(name, dtype):
  x = random_map((2, 5, 4, 16), dtype=dtype)
  definition = att.ATTENTIONS[name](channels=16)
  module = fast.FAST_VERSIONS[att.ATTENTIONS[name]](channels=16)
  variables = definition.init(jax.random.key(1), x)
  y, y_ref = module.apply(variables, x), definition.apply(variables, x)
  assert y.dtype == y_ref.dtype == dtype
  tol = 1e-5 if dtype == jnp.float32 else 1.6e-2
  np.testing.assert_allclose(np.asarray(y, np.float32), np.asarray(y_ref, np.float32), rtol=tol, atol=tol)


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
  got = fast.pfca_weights(jnp.asarray(u32), 1e-4, variance)
  np.testing.assert_allclose(got, expected, rtol=2e-5)


def test_descriptor_derivative_is_exact():
  # On the CPU PFCA's (N, C) derivative goes through a product with I: it must change no bit.
  a = jax.random.normal(jax.random.key(0), (8, 64)) * jnp.logspace(-20, 20, 64)
  value, tangent = jax.jvp(fast.descriptor, (a,), (a,))
  assert (value == a).all() and (tangent == a).all()
  assert (jax.grad(lambda u: jnp.vdot(fast.descriptor(u), a))(a) == a).all()


@pytest.mark.parametrize('variance', att.VARIANCES)
def test_pfca_derivatives_match_textbook_form(variance):
  # Reverse and forward mode of the module (its descriptor's derivative computed apart, the statistics
  # from one level of sums) against JAX's derivatives of the two-pass formula written out.
  def textbook(x):
    u = jnp.mean(x, axis=(1, 2))
    d = jnp.square(u - jnp.mean(u, axis=1, keepdims=True))
    var = jnp.sum(d, axis=1, keepdims=True) / (u.shape[1] - (variance == 'unbiased'))
    return x * jax.nn.sigmoid(d / (4 * (var + 1e-4)) + 0.5)[:, None, None, :]

  module = lambda x: fast.PFCA(variance=variance).apply({}, x)
  x, weights, direction = (random_map((2, 5, 4, 16), seed) for seed in (0, 1, 2))
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
  u, g = random_map((4, 32), 0), random_map((4, 32), 1)
  for variance in att.VARIANCES:
    jaxpr = jax.make_jaxpr(lambda u, g: jax.vjp(lambda u: fast.pfca_weights(u, 1e-4, variance), u)[1](g))(u, g)
    assert str(jaxpr).count('reduce_sum') <= 3


@pytest.mark.parametrize('name', list(att.ATTENTIONS))
def test_folded_bias_equals_added_bias(name):
  # fast(x, bias=b) must be the definition's module(x + b), with the same derivatives for x, b and the
  # parameters: the fast layer passes MSRResNet's conv2 bias this way.
  x = 2.0 * random_map((2, 5, 4, 8)) + 1.0
  bias = jax.random.normal(jax.random.key(7), (8,))
  definition = att.ATTENTIONS[name](channels=8)
  module = fast.FAST_VERSIONS[att.ATTENTIONS[name]](channels=8)
  variables = definition.init(jax.random.key(1), x)
  folded = lambda v, x, b: module.apply(v, x, bias=b)
  added = lambda v, x, b: definition.apply(v, x + b)
  np.testing.assert_allclose(folded(variables, x, bias), added(variables, x, bias), rtol=1e-5, atol=1e-5)
  weights = jax.random.normal(jax.random.key(2), x.shape)
  grads = [jax.jit(jax.grad(lambda *a: jnp.sum(f(*a) * weights), argnums=(0, 1, 2)))(variables, x, bias)
           for f in (folded, added)]
  chex.assert_trees_all_close(grads[0], grads[1], rtol=1e-4, atol=1e-5)


def test_folded_bias_in_bfloat16_keeps_dtypes():
  x = random_map((2, 4, 4, 8)).astype(jnp.bfloat16)
  bias = jax.random.normal(jax.random.key(7), (8,))  # A float32 parameter, as the convolution's.
  y, vjp = jax.vjp(lambda x, b: fast.PFCA().apply({}, x, bias=b), x, bias)
  assert y.dtype == jnp.bfloat16
  dx, db = vjp(jnp.ones_like(y))
  assert (dx.dtype, db.dtype) == (jnp.bfloat16, jnp.float32)
  np.testing.assert_allclose(y.astype(np.float32), np_pfca(x.astype(np.float32) + bias.astype(jnp.bfloat16)),
                             rtol=2e-2, atol=2e-2)


def test_folded_bias_has_forward_mode_derivatives():
  x = random_map((2, 4, 3, 6))
  bias = jax.random.normal(jax.random.key(7), (6,))
  tangents = (jax.random.normal(jax.random.key(8), x.shape), jax.random.normal(jax.random.key(9), (6,)))
  folded = jax.jvp(lambda x, b: fast.PFCA().apply({}, x, bias=b), (x, bias), tangents)
  added = jax.jvp(lambda x, b: att.PFCA().apply({}, x + b), (x, bias), tangents)
  chex.assert_trees_all_close(folded, added, rtol=1e-4, atol=1e-5)
