"""models/fast/cpu_fusion.py: exact identities that change only what XLA's CPU backend fuses."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pfca_jax.models import resnet
from pfca_jax.models.fast import cpu_fusion
from pfca_jax.models.fast.layers import Fast


def test_helpers_are_exact_identities_in_value_and_derivatives():
  a = jax.random.normal(jax.random.key(0), (8, 64)) * jnp.logspace(-20, 20, 64)
  for fn in (cpu_fusion.unfused, cpu_fusion.materialise, jax.jit(cpu_fusion.materialise)):
    value, tangent = jax.jvp(fn, (a,), (2 * a,))
    assert (value == a).all() and (tangent == 2 * a).all()
    assert (jax.grad(lambda x: jnp.vdot(fn(x), a))(a) == a).all()
  # The conditional must survive XLA's simplifier (identical branches would not), or nothing is stored.
  assert 'conditional(' in jax.jit(cpu_fusion.materialise).lower(a).compile().as_text()


def _one_stage_gradient(stage_size, materialise):
  """The jitted training gradient (and logits) of a one-stage ResNet, with or without materialise."""
  model = resnet.ResNet(stage_sizes=(stage_size,), block_cls=resnet.BasicBlock, widths=(8,), stem='cifar',
                        num_classes=10, attention='pfca')
  x = jax.random.normal(jax.random.key(0), (2, 8, 8, 3))
  variables = model.init(jax.random.key(1), x)

  def loss(params):
    logits, _ = model.apply({**variables, 'params': params}, x, train=True, mutable=['batch_stats'])
    return jnp.sum(logits ** 2), logits

  original = Fast.residual_output
  if not materialise:
    Fast.residual_output = lambda self, v: v
  try:  # The module reads the method when traced, so trace and compile here.
    compiled = jax.jit(jax.grad(loss, has_aux=True)).lower(variables['params']).compile()
  finally:
    Fast.residual_output = original
  return compiled, variables['params']


def _largest_fusion_and_conditionals(stage_size, materialise):
  """Instructions in the largest fusion of the compiled gradient, and its number of conditionals."""
  text = _one_stage_gradient(stage_size, materialise)[0].as_text()
  bodies = re.findall(r'^%fused_computation\S* .*?\n((?:.*\n)*?)\}', text, re.M)
  return max(body.count('\n') for body in bodies), text.count(' conditional(')


@pytest.mark.skipif(jax.default_backend() != 'cpu', reason='the conditionals are inserted on the CPU only')
def test_residual_stream_is_not_recomputed_by_later_blocks():
  # Without materialise, each block's output loop recomputes the stream from the first block, so the
  # largest fusion grows with depth (this check failing would mean XLA no longer does that).
  grown = [_largest_fusion_and_conditionals(n, materialise=False)[0] for n in (2, 6)]
  assert grown[1] > grown[0] + 20, grown
  (shallow, conds_2), (deep, conds_6) = (_largest_fusion_and_conditionals(n, materialise=True) for n in (2, 6))
  assert deep <= shallow + 5, (shallow, deep)
  assert (conds_2, conds_6) == (4, 12)  # One per block forward, one per block backward.


def test_resnet_outputs_and_gradients_unchanged_by_materialise():
  results = []
  for materialise in (True, False):
    compiled, params = _one_stage_gradient(4, materialise)
    results.append(compiled(params))
  # Same function; the fusions differ, so float32 rounding may (through the BatchNorms' backward).
  for a, b in zip(*(jax.tree.leaves(r) for r in results)):
    assert float(jnp.abs(a).max()) > 0
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
