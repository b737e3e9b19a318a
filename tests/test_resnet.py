"""ResNet blocks with every attention in both positions: jit, shapes, no recompiles, placement, dtypes."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import apply_twice_under_jit

from pfca_jax import models
from pfca_jax.models import resnet
from pfca_jax.models.attention import ATTENTIONS

BLOCKS = {'basic': resnet.BasicBlock, 'bottleneck': resnet.Bottleneck}


def tiny(block, attention='none', **kw):
  """Two stages of one block each, so both the identity and the projection shortcut are exercised."""
  kw.setdefault('stem', 'cifar')
  return resnet.ResNet(stage_sizes=(1, 1), block_cls=BLOCKS[block], widths=(8, 16), num_classes=10,
                       attention=attention, **kw)


def perturbed(variables, seed=0):
  """Random BN scales, biases and running statistics, so that BNs are not near-identity maps."""
  leaves, treedef = jax.tree_util.tree_flatten(variables)
  keys = jax.random.split(jax.random.key(seed), len(leaves))
  return jax.tree_util.tree_unflatten(treedef, [
      v * jax.random.uniform(k, v.shape, minval=0.5, maxval=1.5) + 0.1 * jax.random.normal(k, v.shape) * (v.ndim == 1)
      for k, v in zip(keys, leaves)])


def images(n=2, h=16, w=12, seed=0):
  return jax.random.normal(jax.random.key(seed), (n, h, w, 3))


@pytest.mark.parametrize('position', ['post_bn', 'post_conv'])
@pytest.mark.parametrize('block', list(BLOCKS))
@pytest.mark.parametrize('attention', list(ATTENTIONS))
def test_forward_under_jit_without_recompiling(attention, block, position):
  model = tiny(block, attention, attention_position=position)
  x = images()
  variables = model.init(jax.random.key(0), x)
  # Same shapes: the second call must reuse the compiled program.
  y1, y2 = apply_twice_under_jit(model, variables, x, images(seed=1), train=False)
  chex.assert_shape([y1, y2], (2, 10))
  chex.assert_tree_all_finite((y1, y2))
  assert not np.allclose(y1, y2)

  outputs = apply_twice_under_jit(model, variables, x, images(seed=1), train=True, mutable=['batch_stats'])
  for logits, updates in outputs:
    chex.assert_shape(logits, (2, 10))
    chex.assert_trees_all_equal_shapes(updates['batch_stats'], variables['batch_stats'])


def _apply(model, variables, x):
  return model.apply(variables, x)


@pytest.mark.parametrize('block', list(BLOCKS))
def test_position_moves_the_attention(block):
  x = images()
  post_bn, post_conv = tiny(block, 'pfca', attention_position='post_bn'), tiny(block, 'pfca',
                                                                               attention_position='post_conv')
  # PFCA has no params, so both placements share one tree. At init the BNs are near
  # identity maps (running mean 0, var 1), which would hide where PFCA sits.
  variables = perturbed(post_bn.init(jax.random.key(0), x))
  assert not np.allclose(_apply(post_bn, variables, x), _apply(post_conv, variables, x), atol=1e-5)
  # 'auto' is SimAM's reference placement after the 3x3 conv, and post_bn for the rest.
  for attention, position in (('simam', 'post_conv'), ('pfca', 'post_bn')):
    auto, explicit = tiny(block, attention), tiny(block, attention, attention_position=position)
    np.testing.assert_array_equal(_apply(auto, variables, x), _apply(explicit, variables, x))


def test_position_sets_the_attended_width():
  # In a bottleneck the 3x3 conv has `planes` channels and the last BN 4 x planes:
  # SE's excitation layer shows which one it is attached to.
  x = images()
  for position, width in (('post_conv', 8), ('post_bn', 32)):
    p = tiny('bottleneck', 'se', attention_position=position).init(jax.random.key(0), x)['params']
    assert p['layer1']['0']['attention']['fc2']['kernel'].shape[-1] == width


def test_attention_is_applied_before_the_residual_add():
  # With the last BN zeroed the branch is zero, so whatever sits between that BN and
  # the add cannot change the output: every attention leaves it identical to none's.
  x = images()
  base = tiny('bottleneck', zero_init_last_bn=True)
  variables = base.init(jax.random.key(0), x)
  y = _apply(base, variables, x)
  for attention in ('pfca', 'simam'):
    model = tiny('bottleneck', attention, zero_init_last_bn=True, attention_position='post_bn')
    np.testing.assert_allclose(_apply(model, variables, x), y, rtol=1e-6, atol=1e-6)
  # Placed after the conv instead, attention changes what the BN sees, but the zeroed
  # BN still hides it: the check above is therefore about the add, not the BN.
  model = tiny('bottleneck', 'pfca', zero_init_last_bn=True, attention_position='post_conv')
  np.testing.assert_allclose(_apply(model, variables, x), y, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize('block, last', [('basic', 'bn2'), ('bottleneck', 'bn3')])
def test_zero_init_last_bn(block, last):
  x = images()
  p = tiny(block, zero_init_last_bn=True).init(jax.random.key(0), x)['params']
  for stage in ('layer1', 'layer2'):
    assert np.all(p[stage]['0'][last]['scale'] == 0)
    assert np.all(p[stage]['0']['bn1']['scale'] == 1)
  p = tiny(block).init(jax.random.key(0), x)['params']
  assert np.all(p['layer1']['0'][last]['scale'] == 1)


@pytest.mark.parametrize('attention', list(ATTENTIONS))
def test_bfloat16_compute_float32_params_and_logits_near_float32(attention):
  x = images()
  f32 = tiny('bottleneck', attention)
  bf16 = tiny('bottleneck', attention, dtype=jnp.bfloat16)
  variables = f32.init(jax.random.key(0), x)
  bf16_variables = bf16.init(jax.random.key(0), x)
  assert all(v.dtype == jnp.float32 for v in jax.tree_util.tree_leaves(bf16_variables))
  chex.assert_trees_all_equal(variables, bf16_variables)  # Same init whatever the compute dtype.
  variables = perturbed(variables)  # BNs away from identity maps, as trained: the branches matter.
  y, inter = bf16.apply(variables, x, capture_intermediates=True)
  assert y.dtype == jnp.float32  # Logits are returned in float32 for the loss.
  assert inter['intermediates']['layer1']['0']['conv2']['__call__'][0].dtype == jnp.bfloat16
  expected = np.asarray(_apply(f32, variables, x))
  # Measured (CPU): max |bf16 - f32| = 0.0040 (none), 0.0054 (pfca), 0.0068 (se), 0.0057 (eca),
  # 0.0048 (simam) x max |f32 logits|; float32's own rounding (fast vs reference layers) ~1e-7 of it.
  # 0.015 is 2.2-3.8x the bf16 error; the residual branches move the logits by 30x that or more.
  tol = 0.015 * np.abs(expected).max()
  np.testing.assert_allclose(y, expected, rtol=0, atol=tol)
  params = dict(variables['params'])
  for stage in ('layer1', 'layer2'):  # A zero last BN zeroes each branch: the blocks become shortcuts.
    params[stage] = {'0': {**params[stage]['0'], 'bn3': jax.tree.map(jnp.zeros_like, params[stage]['0']['bn3'])}}
  without = _apply(f32, {**variables, 'params': params}, x)
  assert np.abs(without - expected).max() > 20 * tol


def test_imagenet_stem_and_strides():
  model = models.create('resnet18', num_classes=7)
  x = jnp.ones((1, 64, 48, 3))
  variables = jax.eval_shape(lambda: model.init(jax.random.key(0), x))
  _, inter = jax.eval_shape(lambda v: model.apply(v, x, capture_intermediates=True), variables)
  shapes = {k: inter['intermediates'][k]['__call__'][0].shape for k in ('conv1', 'layer1', 'layer4')}
  # 7x7/2 conv then 3x3/2 max-pool: /4 before layer1; layer4 is /32.
  assert shapes == {'conv1': (1, 32, 24, 64), 'layer1': (1, 16, 12, 64), 'layer4': (1, 2, 2, 512)}


def test_padding_is_symmetric_like_pytorch():
  # PyTorch pads a 3x3/2 conv by one pixel on every side; flax's 'SAME' would pad
  # only after on even inputs. A one-hot input at the top-left pixel shows which:
  # with symmetric padding the top-left output sees it through the kernel's centre.
  model = models.create('cifar_resnet20')
  conv = jax.tree_util.tree_map(lambda v: v, model.init(jax.random.key(0), jnp.zeros((1, 8, 8, 3))))
  kernel = conv['params']['layer2']['0']['conv1']['kernel']
  import flax.linen as nn
  layer = nn.Conv(32, (3, 3), strides=2, padding=1, use_bias=False)
  x = jnp.zeros((1, 8, 8, 16)).at[0, 0, 0, 0].set(1.0)
  y = layer.apply({'params': {'kernel': kernel}}, x)
  np.testing.assert_allclose(y[0, 0, 0], kernel[1, 1, 0])


def test_train_defaults_to_false():
  model = tiny('basic', 'pfca')
  x = images()
  variables = model.init(jax.random.key(0), x)
  np.testing.assert_array_equal(model.apply(variables, x), model.apply(variables, x, train=False))


def test_batch_of_one():
  model = models.create('cifar_resnet20', attention='pfca')
  x = images(n=1, h=32, w=32)
  variables = model.init(jax.random.key(0), x)
  chex.assert_shape(jax.jit(lambda v, i: model.apply(v, i))(variables, x), (1, 100))


def test_rejects_non_nhwc_input():
  model = tiny('basic')
  with pytest.raises(ValueError, match='NHWC'):
    model.init(jax.random.key(0), jnp.ones((16, 16, 3)))
