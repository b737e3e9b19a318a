"""The fast layer equals the definitions in every network, and chooses its code by compiled platform.

`attention_impl='reference'` builds a network from flax's layers and models/attention.py alone;
'fast' (the default) from models/fast/. Both must have the same variables and agree, in training
mode, on outputs (relative 1e-4), BatchNorm statistics and gradients (relative 1e-3).
"""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import export

from pfca_jax import models
from pfca_jax.models import attention as att
from pfca_jax.models import layers, resnet

# Every code path of the networks, at one block per stage: basic and bottleneck blocks, CIFAR and
# ImageNet stems, projection shortcuts, and MSRResNet's three upsampling tails. The named networks
# repeat these blocks (test_named_networks_have_the_same_variables_either_way). Inputs leave at least
# 2x2 pixels in the last stage: BatchNorm over a batch of two single pixels is too ill-conditioned
# for any two float32 computations of it to agree.
_small_resnet = functools.partial(resnet.ResNet, stage_sizes=(1, 1, 1), widths=(8, 16, 16), num_classes=10)
NETWORKS = {
    'cifar_basic': (lambda **kw: _small_resnet(block_cls=resnet.BasicBlock, stem='cifar', **kw), (2, 8, 8, 3)),
    'cifar_bottleneck': (lambda **kw: _small_resnet(block_cls=resnet.Bottleneck, stem='cifar', **kw), (2, 8, 8, 3)),
    'imagenet_basic': (lambda **kw: _small_resnet(block_cls=resnet.BasicBlock, **kw), (2, 32, 32, 3)),
    'imagenet_bottleneck': (lambda **kw: _small_resnet(block_cls=resnet.Bottleneck, **kw), (2, 32, 32, 3)),
    'msrresnet_x2': (lambda **kw: models.create('msrresnet', scale=2, num_feat=16, num_block=2, **kw), (2, 6, 5, 3)),
    'msrresnet_x3': (lambda **kw: models.create('msrresnet', scale=3, num_feat=16, num_block=2, **kw), (2, 6, 5, 3)),
    'msrresnet_x4': (lambda **kw: models.create('msrresnet', scale=4, num_feat=16, num_block=2, **kw), (2, 6, 5, 3)),
}


def _perturbed(variables):
  # Non-trivial BN scales, biases and running statistics and convolution biases, so that no term is
  # zero or one by construction; the weights keep their initial scale.
  leaves, tree = jax.tree_util.tree_flatten_with_path(variables)
  out = []
  for i, (path, v) in enumerate(leaves):
    noise = jax.random.normal(jax.random.fold_in(jax.random.key(5), i), v.shape)
    name = getattr(path[-1], 'key', '')
    if name == 'var':
      v = v * (1.0 + 0.5 * jnp.abs(noise))
    elif name in ('scale', 'bias', 'mean'):
      v = v + 0.2 * noise
    out.append(v)
  return jax.tree_util.tree_unflatten(tree, out)


def _train_step_values(model, variables, x):
  """Outputs, new BatchNorm statistics and the gradient of a fixed weighted sum, in training mode."""
  train = {'train': True, 'mutable': ['batch_stats']} if 'batch_stats' in variables else {}

  def loss(params):
    out = model.apply({**variables, 'params': params}, x, **train)
    y, state = out if train else (out, {})
    return jnp.sum(jnp.sin(y)), (y, state)

  (_, (y, state)), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(variables['params'])
  return y, state, grads


def _assert_relative(a, b, rtol, what):
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  scale = max(float(np.abs(b).max()), 1e-12)
  # Elementwise, relative to each element, with the leaf's scale as the floor for elements near zero.
  np.testing.assert_allclose(a, b, rtol=rtol, atol=rtol * 1e-2 * scale, err_msg=what)


@pytest.mark.parametrize('attention', list(att.ATTENTIONS))
@pytest.mark.parametrize('network', list(NETWORKS))
def test_fast_network_equals_reference(network, attention):
  make, shape = NETWORKS[network]
  reference, fast = (make(attention=attention, attention_impl=impl) for impl in ('reference', 'fast'))
  x = jax.random.normal(jax.random.key(0), shape)
  variables = reference.init(jax.random.key(1), x)
  assert jax.tree.map(jnp.shape, jax.eval_shape(fast.init, jax.random.key(1), x)) == jax.tree.map(jnp.shape, variables)
  variables = _perturbed(variables)
  (y_ref, state_ref, g_ref), (y, state, g) = (_train_step_values(m, variables, x) for m in (reference, fast))
  _assert_relative(y, y_ref, 1e-4, 'outputs')
  for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(state_ref)):
    _assert_relative(a, b, 1e-4, 'batch statistics')
  paths = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_leaves_with_path(g_ref)]
  for path, a, b in zip(paths, jax.tree.leaves(g), jax.tree.leaves(g_ref)):
    _assert_relative(a, b, 1e-3, f'gradient of {path}')


# One named network per stem and block type (the depths only repeat blocks): the others differ from these
# in stage sizes alone. cifar_resnet164, the one CIFAR bottleneck network, is built as cifar_bottleneck above.
@pytest.mark.parametrize('attention', ['pfca', 'se'])
@pytest.mark.parametrize('name', ['resnet18', 'resnet50', 'cifar_resnet20', 'msrresnet'])
def test_named_networks_have_the_same_variables_either_way(name, attention):
  x = jnp.zeros((1, 32, 32, 3))
  shapes = [jax.tree.map(jnp.shape, jax.eval_shape(lambda: models.create(name, attention=attention, attention_impl=impl)
                                                   .init(jax.random.key(0), x))) for impl in ('reference', 'fast')]
  assert shapes[0] == shapes[1]


def test_attention_impl_is_validated():
  with pytest.raises(ValueError, match="unknown attention_impl 'quick'; valid: fast, reference"):
    models.create('cifar_resnet20', attention_impl='quick')
  # conv_impl's refusal: test_fast_conv.py.


class Halved(att.PFCA):
  """A variant the fast layer has no version of: it must run as defined, not as PFCA's fast version."""

  @nn.compact
  def __call__(self, x):
    return 0.5 * super().__call__(x)


@pytest.mark.parametrize('network', ['cifar_basic', 'msrresnet_x2'])
def test_an_attention_without_fast_version_runs_as_defined(network, monkeypatch):
  monkeypatch.setitem(att.ATTENTIONS, 'halved', Halved)
  make, shape = NETWORKS[network]
  x = jax.random.normal(jax.random.key(0), shape)
  fast_halved, halved, pfca = (make(attention=a, attention_impl=impl)
                               for a, impl in (('halved', 'fast'), ('halved', 'reference'), ('pfca', 'reference')))
  variables = _perturbed(pfca.init(jax.random.key(1), x))
  y_fast, y_halved, y_pfca = (m.apply(variables, x) for m in (fast_halved, halved, pfca))
  # As defined (to float rounding), and far from what PFCA's fast version would give.
  assert float(jnp.abs(y_fast - y_halved).max()) < 1e-2 * float(jnp.abs(y_halved - y_pfca).max())


# The smallest network with the ImageNet stem (max-pool), basic blocks and projections: 9 convolutions
# forward (stem, 2 per block, 2 projections), 17 more in the gradient (no input gradient for the stem).
EXPORTED_CONVOLUTIONS = 9 + 9 + 8


@functools.cache
def _exported_text(attention_impl, platform):
  """The gradient of a training step of the small network, lowered for `platform`; each lowered once."""
  model = _small_resnet(block_cls=resnet.BasicBlock, attention='pfca', attention_impl=attention_impl)
  x = jnp.zeros((2, 32, 32, 3))
  variables = jax.eval_shape(lambda: model.init(jax.random.key(0), x))

  def grad(params, batch_stats, x):
    def loss(p):
      return jnp.sum(model.apply({'params': p, 'batch_stats': batch_stats}, x, train=True, mutable=['batch_stats'])[0])
    return jax.grad(loss)(params)

  exported = export.export(jax.jit(grad), platforms=(platform,))(variables['params'], variables['batch_stats'], x)
  return exported.mlir_module()


@pytest.mark.parametrize('platform', ['cpu', 'cuda', 'tpu'])
def test_cpu_code_goes_only_into_programs_compiled_for_the_cpu(platform):
  # Lowered here, on a CPU-only host, for each platform: the choice follows the platform compiled
  # for, not the process's default backend.
  text = _exported_text('fast', platform)
  convolutions = text.count('stablehlo.convolution')
  barriers = text.count('stablehlo.optimization_barrier')
  if platform == 'cpu':
    # 1x1 projections as products, and a stored output (a barrier) for each of the 3 blocks.
    assert barriers >= 3 and 'stablehlo.select_and_scatter' not in text
    assert convolutions < _exported_text('fast', 'cuda').count('stablehlo.convolution')
  else:
    assert barriers == 0
    assert 'stablehlo.select_and_scatter' in text  # nn.max_pool's own gradient.
    # Every convolution of the forward pass and its gradients stays a convolution off the CPU.
    assert convolutions >= EXPORTED_CONVOLUTIONS


def test_reference_layers_have_no_platform_code():
  cpu, cuda = (_exported_text('reference', p) for p in ('cpu', 'cuda'))
  assert 'optimization_barrier' not in cpu
  assert cpu.count('stablehlo.convolution') == cuda.count('stablehlo.convolution') >= EXPORTED_CONVOLUTIONS


def test_layer_sets_are_chosen_by_name():
  assert isinstance(layers.choose('reference'), layers.Reference)
  assert isinstance(layers.choose('fast'), layers.Fast)
