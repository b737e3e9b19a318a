"""models/fast/batchnorm.BatchNorm is nn.BatchNorm, and with pfca=True nn.BatchNorm then PFCA: same variables,
outputs, gradients and running statistics."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pfca_jax.models.attention import PFCA
from pfca_jax.models.fast.batchnorm import BatchNorm


class Unfused(nn.Module):
  train: bool
  variance: str = 'unbiased'
  pfca: bool = True

  @nn.compact
  def __call__(self, x):
    x = nn.BatchNorm(use_running_average=not self.train, momentum=0.9, epsilon=1e-5, name='bn')(x)
    return PFCA(variance=self.variance)(x) if self.pfca else x


class Fused(nn.Module):
  train: bool
  variance: str = 'unbiased'
  pfca: bool = True

  @nn.compact
  def __call__(self, x):
    return BatchNorm(use_running_average=not self.train, momentum=0.9, pfca=self.pfca, variance=self.variance,
                     name='bn')(x)


@pytest.mark.parametrize('train', [True, False])
@pytest.mark.parametrize('variance,pfca', [('unbiased', True), ('biased', True), ('unbiased', False)])
def test_fused_equals_batchnorm_then_pfca(train, variance, pfca):
  unfused, fused = Unfused(train, variance, pfca), Fused(train, variance, pfca)
  x = 3.0 * jax.random.normal(jax.random.key(0), (4, 5, 7, 6)) + jnp.arange(6.0)
  variables = unfused.init(jax.random.key(1), x)
  assert jax.tree.map(jnp.shape, fused.init(jax.random.key(1), x)) == \
      jax.tree.map(jnp.shape, variables)
  # Non-trivial scale, bias and running statistics.
  variables = jax.tree.map(lambda v: v + 0.3 * jax.random.uniform(jax.random.key(2), v.shape), variables)
  run = lambda module, v, x: module.apply(v, x, mutable=['batch_stats'])
  (y_ref, stats_ref), (y, stats) = run(unfused, variables, x), run(fused, variables, x)
  np.testing.assert_allclose(y, y_ref, rtol=2e-5, atol=2e-5)
  for a, b in zip(jax.tree.leaves(stats), jax.tree.leaves(stats_ref)):
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)
  weights = jax.random.normal(jax.random.key(3), x.shape)
  grad = lambda module: jax.grad(lambda v, x: jnp.sum(run(module, v, x)[0] * weights), argnums=(0, 1))(variables, x)
  for a, b in zip(jax.tree.leaves(grad(fused)), jax.tree.leaves(grad(unfused))):
    # Parameter gradients are float32 sums of 140 terms each, up to about 20: each path is itself
    # about 1e-4 from a float64 evaluation, so the bound scales with the leaf's size.
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4 + 1e-5 * float(np.abs(b).max()))


def test_fused_forward_mode_matches_unfused():
  # The CPU computes PFCA's (N, C) derivative apart (tests/test_fast_attention.py checks it is exact):
  # forward mode (jvp) must keep working through the fused module, not only reverse mode.
  module = Fused(train=True)
  x = jax.random.normal(jax.random.key(1), (2, 3, 3, 4))
  variables = module.init(jax.random.key(2), x)
  direction = jax.random.normal(jax.random.key(3), x.shape)
  tangents = [jax.jvp(lambda x: m.apply(variables, x, mutable=['batch_stats'])[0], (x,), (direction,))[1]
              for m in (module, Unfused(train=True))]
  assert float(jnp.abs(tangents[1]).max()) > 0.1
  np.testing.assert_allclose(tangents[0], tangents[1], rtol=1e-4, atol=1e-4)
