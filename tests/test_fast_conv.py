"""models/fast/conv.Conv, in either lowering, gives nn.Conv's parameters, outputs and gradients."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pfca_jax import models
from pfca_jax.models import resnet
from pfca_jax.models.fast.conv import Conv


@pytest.mark.parametrize('kernel,strides,padding,shape', [
    ((1, 1), 1, 0, (2, 9, 7, 12)),     # bottleneck 1x1
    ((1, 1), 2, 0, (2, 9, 7, 12)),     # projection shortcut, odd sizes
    ((3, 3), 1, 1, (2, 8, 8, 5)),      # stays lax.conv
    ((3, 3), 2, 1, (2, 9, 10, 5)),     # v1.5 strided 3x3, lax.conv
    ((7, 7), 2, 3, (1, 23, 17, 3)),    # stem, lax.conv
    ((3, 3), 1, 1, (2, 8, 9, 54)),     # few outputs (9 * 6 <= 54): one product with all taps
    ((3, 3), 1, 0, (2, 7, 9, 60)),     # the same, valid padding
    ((1, 3), 1, 1, (1, 5, 6, 18)),     # non-square taps (3 * 6 <= 18), padding 1 both ways
])
@pytest.mark.parametrize('impl', ['matmul', 'xla'])
def test_conv_matches_nn_conv(kernel, strides, padding, shape, impl):
  x = jax.random.normal(jax.random.key(0), shape)
  reference = nn.Conv(6, kernel, strides=strides, padding=padding, use_bias=True)
  ours = Conv(6, kernel, strides=strides, padding=padding, use_bias=True, impl=impl)
  variables = reference.init(jax.random.key(1), x)
  assert jax.tree.map(jnp.shape, ours.init(jax.random.key(1), x)) == jax.tree.map(jnp.shape, variables)
  variables = jax.tree.map(lambda v: v + 0.1 * jax.random.normal(jax.random.key(2), v.shape), variables)
  np.testing.assert_allclose(ours.apply(variables, x), reference.apply(variables, x), rtol=1e-5, atol=1e-5)
  weights = jax.random.normal(jax.random.key(3), reference.apply(variables, x).shape)
  grad = lambda module: jax.jit(jax.grad(lambda v, x: jnp.sum(module.apply(v, x) * weights), argnums=(0, 1)))(variables, x)
  for a, b in zip(jax.tree.leaves(grad(ours)), jax.tree.leaves(grad(reference))):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize('impl', ['matmul', 'xla'])
@pytest.mark.parametrize('kernel', [(1, 1), (3, 3)])
def test_conv_can_leave_its_bias_unadded(impl, kernel):
  x = jax.random.normal(jax.random.key(0), (2, 5, 6, 32))
  conv = Conv(3, kernel, padding=kernel[0] // 2, impl=impl, bias_init=nn.initializers.normal(1.0))
  variables = conv.init(jax.random.key(1), x)
  y, bias = conv.apply(variables, x, add_bias=False)
  np.testing.assert_array_equal(bias, variables['params']['bias'])
  np.testing.assert_allclose(y + bias, conv.apply(variables, x), rtol=1e-6, atol=1e-6)
  without = Conv(3, kernel, padding=kernel[0] // 2, impl=impl, use_bias=False)
  y, bias = without.apply(without.init(jax.random.key(1), x), x, add_bias=False)
  assert bias is None and y.shape == (2, 5, 6, 3)


def test_resnet_lowerings_share_parameters_and_outputs():
  # A bottleneck block a stage with the ImageNet stem: every convolution shape of the ImageNet ResNets
  # (7x7/2 stem, 1x1, strided 3x3, strided 1x1 projection), down to 1x1 in layer4.
  x = jax.random.normal(jax.random.key(0), (2, 32, 32, 3))
  plain, fast = (resnet.ResNet(stage_sizes=(1, 1, 1, 1), block_cls=resnet.Bottleneck, widths=(8, 16, 16, 32),
                               num_classes=10, attention='pfca', conv_impl=impl) for impl in ('xla', 'matmul'))
  variables = plain.init(jax.random.key(1), x)
  assert jax.tree.all(jax.tree.map(lambda a, b: bool((a == b).all()), variables, fast.init(jax.random.key(1), x)))
  np.testing.assert_allclose(fast.apply(variables, x), plain.apply(variables, x), rtol=1e-4, atol=1e-5)


def test_msrresnet_lowerings_share_parameters_and_outputs():
  # num_feat=32: 9 taps x 3 outputs <= 32 inputs, so conv_last takes the tap product.
  x = jax.random.uniform(jax.random.key(0), (2, 6, 7, 3))
  plain, fast = (models.create('msrresnet', scale=4, num_feat=32, num_block=1, attention='pfca', conv_impl=impl)
                 for impl in ('xla', 'matmul'))
  variables = plain.init(jax.random.key(1), x)
  assert jax.tree.all(jax.tree.map(lambda a, b: bool((a == b).all()), variables, fast.init(jax.random.key(1), x)))
  variables = jax.tree.map(lambda v: v + 0.05 * jax.random.normal(jax.random.key(2), v.shape), variables)
  grad = lambda m: jax.grad(lambda v: jnp.sum(jnp.abs(m.apply(v, x) - 0.5)))(variables)
  np.testing.assert_allclose(fast.apply(variables, x), plain.apply(variables, x), rtol=1e-5, atol=1e-5)
  for a, b in zip(jax.tree.leaves(grad(fast)), jax.tree.leaves(grad(plain))):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def test_conv_impl_is_validated():
  with pytest.raises(ValueError, match="unknown conv_impl 'fast'; valid: auto, xla, matmul"):
    models.create('cifar_resnet20', conv_impl='fast')
  with pytest.raises(ValueError, match="unknown conv_impl 'fast'; valid: auto, xla, matmul"):
    models.create('msrresnet', conv_impl='fast')
