"""pfca_jax.nnx: the flax.nnx attentions compute their linen definitions, take the same weights and options."""

import pathlib
import re

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import pfca_jax.nnx as pnnx
from pfca_jax.models import attention as att

# (linen module, NNX module for C channels): every option of each definition appears at least once.
PAIRS = {
    'pfca': (lambda c: att.PFCA(), lambda c: pnnx.PFCA()),
    'pfca_biased': (lambda c: att.PFCA(lam=1e-2, variance='biased'), lambda c: pnnx.PFCA(lam=1e-2, variance='biased')),
    'pfca_channels': (lambda c: att.PFCA(channels=c), lambda c: pnnx.PFCA(channels=c)),
    'se': (lambda c: att.SE(reduction=4, channels=c), lambda c: pnnx.SE(c, reduction=4, rngs=nnx.Rngs(7))),
    'eca': (lambda c: att.ECA(channels=c), lambda c: pnnx.ECA(c, rngs=nnx.Rngs(7))),
    'simam': (lambda c: att.SimAM(lam=1e-3), lambda c: pnnx.SimAM(lam=1e-3)),
}
# Batch 1, odd and 1x1 maps, and C = 2 (SE's bottleneck floors at 1, ECA's kernel is 1 wide).
SHAPES = [(1, 7, 5, 16), (2, 3, 9, 32), (3, 1, 1, 16), (1, 4, 4, 2)]


def _random(shape, seed, dtype=jnp.float32):
  # Per-channel offsets make the channel means differ, so no attention is uniform by accident.
  rng = np.random.default_rng(seed)
  return jnp.asarray(rng.normal(size=shape) + rng.normal(size=shape[-1]) * 2, dtype)


@pytest.mark.parametrize('dtype', [jnp.float32, jnp.bfloat16], ids=['float32', 'bfloat16'])
@pytest.mark.parametrize('shape', SHAPES, ids=lambda s: 'x'.join(map(str, s)))
@pytest.mark.parametrize('name', PAIRS)
def test_nnx_equals_linen_on_the_same_weights(name, shape, dtype):
  make_linen, make_nnx = PAIRS[name]
  x = _random(shape, seed=sum(shape), dtype=dtype)
  # Both modules are built as shapes only (random initialisation compiles slowly, eagerly) and take the
  # same random weights, biases included, so that a weight read from the wrong place changes the output.
  linen = make_linen(shape[-1])
  module = nnx.eval_shape(lambda: make_nnx(shape[-1]))
  shapes = jax.eval_shape(linen.init, jax.random.key(0), x).get('params', {})
  rng = np.random.default_rng(1)
  params = jax.tree.map(lambda p: jnp.asarray(rng.normal(size=p.shape), p.dtype), shapes)

  # The same names and shapes, so linen's params load as they are.
  assert jax.tree.map(jnp.shape, nnx.to_pure_dict(nnx.state(module, nnx.Param))) == jax.tree.map(jnp.shape, params)
  nnx.update(module, params)
  want = linen.apply({'params': params}, x)
  got = module(x)
  assert got.dtype == want.dtype == dtype
  chex.assert_trees_all_equal(got, want)



@pytest.mark.parametrize('name', ['se', 'eca', 'pfca'])
def test_nnx_gradients_equal_linen(name):
  # Training an NNX model differentiates through the Params: the same derivatives as linen's.
  make_linen, make_nnx = PAIRS[name]
  x = _random((2, 5, 3, 16), seed=3)
  linen, module = make_linen(16), make_nnx(16)
  params = nnx.to_pure_dict(nnx.state(module, nnx.Param))

  def linen_loss(params, x):
    return jnp.sum(jnp.square(linen.apply({'params': params}, x)))

  want = jax.grad(linen_loss, argnums=(0, 1))(params, x)
  got_params, got_x = nnx.grad(lambda m, x: jnp.sum(jnp.square(m(x))), argnums=(0, 1))(module, x)
  chex.assert_trees_all_close((nnx.to_pure_dict(got_params), got_x), want, rtol=1e-6, atol=1e-6)
  assert np.abs(np.asarray(got_x)).max() > 0

@pytest.mark.parametrize('module', [pnnx.PFCA(), pnnx.PFCA(lam=1e-2, variance='biased', channels=8),
                                    pnnx.SimAM(), pnnx.SimAM(lam=1e-3, channels=8)],
                         ids=['pfca', 'pfca_options', 'simam', 'simam_options'])
def test_pfca_and_simam_hold_no_state(module):
  assert not nnx.state(module)
  assert module(_random((2, 3, 3, 8), seed=0)).shape == (2, 3, 3, 8)


def test_se_and_eca_weights_have_the_linen_sizes():
  se, eca = nnx.eval_shape(lambda: (pnnx.SE(64, rngs=nnx.Rngs(0)), pnnx.ECA(64, rngs=nnx.Rngs(0))))
  assert (se.fc1.kernel.shape, se.fc1.bias.shape, se.fc2.kernel.shape) == ((64, 4), (4,), (4, 64))
  assert eca.conv.kernel.shape == (att.eca_kernel_size(64), 1, 1) == (3, 1, 1)
  assert eca.conv.bias is None


def _raised(make):
  with pytest.raises(Exception) as info:
    make()
  return type(info.value), str(info.value)


# (linen, NNX) builds or calls that must fail alike: bad values, unknown options, wrong inputs.
FAILURES = {
    'pfca_variance': (lambda: att.PFCA(variance='population'), lambda: pnnx.PFCA(variance='population')),
    'pfca_lam': (lambda: att.PFCA(lam=0.0), lambda: pnnx.PFCA(lam=0.0)),
    'pfca_one_channel': (lambda: att.PFCA(channels=1), lambda: pnnx.PFCA(channels=1)),
    'pfca_unknown_option': (lambda: att.PFCA(reduction=4), lambda: pnnx.PFCA(reduction=4)),
    'simam_lam': (lambda: att.SimAM(lam=-1.0), lambda: pnnx.SimAM(lam=-1.0)),
    'simam_unknown_option': (lambda: att.SimAM(variance='biased'), lambda: pnnx.SimAM(variance='biased')),
    'se_reduction_zero': (lambda: att.SE(reduction=0), lambda: pnnx.SE(16, reduction=0, rngs=nnx.Rngs(0))),
    'se_reduction_float': (lambda: att.SE(reduction=2.5), lambda: pnnx.SE(16, reduction=2.5, rngs=nnx.Rngs(0))),
    'se_unknown_option': (lambda: att.SE(lam=1.0), lambda: pnnx.SE(16, lam=1.0, rngs=nnx.Rngs(0))),
    'eca_unknown_option': (lambda: att.ECA(k=3), lambda: pnnx.ECA(16, k=3, rngs=nnx.Rngs(0))),
    'pfca_wrong_width': (lambda: att.PFCA(channels=8).apply({}, jnp.ones((1, 2, 2, 4))),
                         lambda: pnnx.PFCA(channels=8)(jnp.ones((1, 2, 2, 4)))),
    'pfca_not_nhwc': (lambda: att.PFCA().apply({}, jnp.ones((2, 4))), lambda: pnnx.PFCA()(jnp.ones((2, 4)))),
    'simam_not_nhwc': (lambda: att.SimAM().apply({}, jnp.ones((2, 4))), lambda: pnnx.SimAM()(jnp.ones((2, 4)))),
    'se_wrong_width': (lambda: att.SE(channels=8).init(jax.random.key(0), jnp.ones((1, 2, 2, 4))),
                       lambda: pnnx.SE(8, rngs=nnx.Rngs(0))(jnp.ones((1, 2, 2, 4)))),
    'eca_not_nhwc': (lambda: att.ECA().init(jax.random.key(0), jnp.ones((2, 4))),
                     lambda: pnnx.ECA(4, rngs=nnx.Rngs(0))(jnp.ones((2, 4)))),
}


@pytest.mark.parametrize('case', FAILURES)
def test_bad_options_and_inputs_fail_like_linen(case):
  make_linen, make_nnx = FAILURES[case]
  assert _raised(make_nnx) == _raised(make_linen)


@pytest.mark.parametrize('make', [lambda c: pnnx.SE(c, rngs=nnx.Rngs(0)), lambda c: pnnx.ECA(c, rngs=nnx.Rngs(0))],
                         ids=['se', 'eca'])
@pytest.mark.parametrize('channels', [0, None, 2.0])
def test_se_and_eca_need_a_channel_count(make, channels):
  # NNX creates weights when a module is built, so the width cannot wait for the first input.
  with pytest.raises(ValueError, match=rf'channels={channels!r} must be a positive integer'):
    make(channels)


def test_models_page_shows_both_nnx_examples():
  # tests/test_readme.py executes every python block of docs/models.md; this keeps the two NNX ones there.
  page = (pathlib.Path(__file__).resolve().parent.parent / 'docs' / 'models.md').read_text()
  blocks = re.findall(r'```python\n(.*?)```', page, flags=re.S)
  assert any('nnx.BatchNorm' in b and 'pfca_jax.nnx.PFCA()' in b for b in blocks)
  assert any('bridge.ToNNX(models.create(\'cifar_resnet20\', attention=\'pfca\')' in b and 'nnx.BatchStat' in b
             and 'train=True' in b and 'train=False' in b for b in blocks)
