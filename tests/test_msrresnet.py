"""MSRResNet: shapes, BasicSR's init, pixel shuffle and bilinear skip against independent NumPy references."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import apply_twice_under_jit, plain_kaiming

from pfca_jax import models
from pfca_jax.models import msrresnet
from pfca_jax.models.attention import ATTENTIONS, PFCA


def np_pixel_shuffle_nchw(x, r):
  """PyTorch's F.pixel_shuffle written out index by index: out[c, h*r+i, w*r+j] = in[c*r*r + i*r + j, h, w]."""
  crr, h, w = x.shape
  c = crr // (r * r)
  out = np.empty((c, h * r, w * r), x.dtype)
  for ch in range(c):
    for i in range(r):
      for j in range(r):
        out[ch, i::r, j::r] = x[ch * r * r + i * r + j]
  return out


@pytest.mark.parametrize('r', [2, 3])
def test_pixel_shuffle_matches_pytorch_channel_order(r):
  x = np.random.default_rng(0).normal(size=(2, 3, 5, 4 * r * r)).astype(np.float32)
  y = np.asarray(msrresnet.pixel_shuffle(jnp.asarray(x), r))
  assert y.shape == (2, 3 * r, 5 * r, 4)
  for n in range(2):
    ref = np_pixel_shuffle_nchw(x[n].transpose(2, 0, 1), r).transpose(1, 2, 0)
    np.testing.assert_array_equal(y[n], ref)


def np_bilinear_align_corners_false(x, scale):
  """PyTorch's F.interpolate(mode='bilinear', align_corners=False) for one HxWxC image."""
  h, w, _ = x.shape

  def taps(n_in, n_out):
    src = np.maximum((np.arange(n_out) + 0.5) / scale - 0.5, 0.0)  # PyTorch clamps at 0.
    i0 = np.floor(src).astype(int)
    i1 = np.minimum(i0 + 1, n_in - 1)
    return i0, i1, src - i0

  r0, r1, fr = taps(h, h * scale)
  c0, c1, fc = taps(w, w * scale)
  rows = x[r0] * (1 - fr)[:, None, None] + x[r1] * fr[:, None, None]
  return rows[:, c0] * (1 - fc)[None, :, None] + rows[:, c1] * fc[None, :, None]


@pytest.mark.parametrize('scale', [2, 3, 4])
def test_bilinear_skip_matches_pytorch_semantics(scale):
  x = np.random.default_rng(1).normal(size=(2, 5, 7, 3))
  y = np.asarray(msrresnet.upsample_bilinear(jnp.asarray(x, jnp.float32), scale))
  for n in range(2):
    np.testing.assert_allclose(y[n], np_bilinear_align_corners_false(x[n], scale), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('scale', [2, 3, 4])
def test_output_shape_on_non_square_input(scale):
  model = models.create('msrresnet', scale=scale, num_block=2)
  for shape in ((1, 6, 9, 3), (3, 5, 4, 3)):
    x = jnp.ones(shape)
    variables = jax.eval_shape(lambda: model.init(jax.random.key(0), x))
    y = jax.eval_shape(lambda v: model.apply(v, x), variables)
    assert y.shape == (shape[0], shape[1] * scale, shape[2] * scale, 3) and y.dtype == jnp.float32


def test_global_skip_is_bilinear_upsampling():
  # With conv_last zeroed the learned branch contributes nothing, so the output is
  # exactly the bilinear upsampling of the input: the skip is added, not replaced.
  model = models.create('msrresnet', scale=4, num_block=1)
  x = jax.random.uniform(jax.random.key(0), (2, 6, 5, 3))
  variables = plain_kaiming(model.init(jax.random.key(1), x))
  zeroed = jax.tree_util.tree_map(jnp.zeros_like, variables['params']['conv_last'])
  params = {**variables['params'], 'conv_last': zeroed}
  np.testing.assert_allclose(model.apply({'params': params}, x), msrresnet.upsample_bilinear(x, 4), atol=1e-6)
  assert not np.allclose(model.apply(variables, x), msrresnet.upsample_bilinear(x, 4), atol=1e-3)


@pytest.mark.parametrize('scale', [2, 3, 4])
def test_init_is_kaiming_normal_times_point_one(scale):
  params = models.create('msrresnet', scale=scale).init(jax.random.key(0), jnp.zeros((1, 8, 8, 3)))['params']
  convs = {name: params[name] for name in ('conv_first', 'upconv1', 'conv_hr', 'conv_last')}
  if scale == 4:
    convs['upconv2'] = params['upconv2']
  else:
    assert 'upconv2' not in params
  for i in (0, 15):
    for name in ('conv1', 'conv2'):
      convs[f'body.{i}.{name}'] = params['body'][str(i)][name]
  for name, conv in convs.items():
    kernel = np.asarray(conv['kernel'], np.float64)
    kh, kw, cin, cout = kernel.shape
    expected = 0.1 * np.sqrt(2.0 / (kh * kw * cin))  # Kaiming fan_in, gain sqrt(2), times 0.1.
    # The sample std of n normals has relative standard error ~ 1/sqrt(2n): conv_first
    # (n = 1,728) is the smallest, about 1.7%; 10% is far outside chance either way.
    assert abs(kernel.std() / expected - 1) < 0.1, (name, kernel.std(), expected)
    assert abs(kernel.mean()) < 0.2 * expected, name
    # Untruncated normal: truncation at 2 std would leave no tail at all.
    assert np.abs(kernel).max() > 2.5 * expected, name
    np.testing.assert_array_equal(conv['bias'], 0.0)


@pytest.mark.parametrize('attention', list(ATTENTIONS))
def test_every_attention_under_jit_without_recompiling(attention):
  model = models.create('msrresnet', scale=2, num_block=2, attention=attention)
  x = jax.random.uniform(jax.random.key(0), (2, 6, 10, 3))
  variables = model.init(jax.random.key(0), x)
  y1, y2 = apply_twice_under_jit(model, variables, x, x + 0.5, train=True)
  chex.assert_shape([y1, y2], (2, 12, 20, 3))
  chex.assert_tree_all_finite((y1, y2))


def test_attention_sits_before_the_identity_add():
  # Block 1 must compute block0_out + PFCA(conv2_out): attention on the branch only.
  x = jax.random.uniform(jax.random.key(0), (1, 6, 6, 3))
  plain = models.create('msrresnet', scale=2, num_block=2)
  pfca = models.create('msrresnet', scale=2, num_block=2, attention='pfca')
  variables = plain_kaiming(plain.init(jax.random.key(0), x))
  assert not np.allclose(plain.apply(variables, x), pfca.apply(variables, x), atol=1e-3)
  _, inter = pfca.apply(variables, x, capture_intermediates=True)
  body = inter['intermediates']['body']
  block_in = body['0']['__call__'][0]
  branch, bias = body['1']['conv2']['__call__'][0]  # conv2 leaves its bias to the attention to fold in.
  branch = branch + bias
  expected = block_in + PFCA().apply({}, branch)
  np.testing.assert_allclose(body['1']['__call__'][0], expected, rtol=1e-5, atol=1e-5)
  assert not np.allclose(body['1']['__call__'][0], PFCA().apply({}, block_in + branch), atol=1e-3)


def trained_like(variables, seed=0):
  """Plain Kaiming kernels and N(0, 0.1) biases: a body whose branch is of the order of its input, as trained."""
  leaves, tree = jax.tree_util.tree_flatten_with_path(plain_kaiming(variables))
  keys = jax.random.split(jax.random.key(seed), len(leaves))
  return jax.tree_util.tree_unflatten(tree, [v + 0.1 * jax.random.normal(k, v.shape) if path[-1].key == 'bias' else v
                                             for k, (path, v) in zip(keys, leaves)])


def test_bfloat16_compute_float32_output_near_float32():
  model = models.create('msrresnet', scale=2, num_block=2, attention='pfca', dtype='bfloat16')
  f32 = models.create('msrresnet', scale=2, num_block=2, attention='pfca')
  x = jax.random.uniform(jax.random.key(0), (2, 8, 8, 3))
  variables = trained_like(model.init(jax.random.key(0), x))
  assert all(v.dtype == jnp.float32 for v in jax.tree_util.tree_leaves(variables))
  y, inter = model.apply(variables, x, capture_intermediates=True)
  assert y.dtype == jnp.float32
  assert inter['intermediates']['conv_first']['__call__'][0].dtype == jnp.bfloat16
  expected = np.asarray(f32.apply(variables, x))
  # Measured (CPU): max |bf16 - f32| = 0.0084 x max |f32 output| (0.007-0.011 over other seeds and
  # without attention); float32's own rounding (fast vs reference layers) is 4e-7 of it. 0.02 is 2.4x
  # the bf16 error, and the body moves the output by 0.72 of it: a body skipped or computed wrongly
  # in bfloat16 only fails.
  tol = 0.02 * np.abs(expected).max()
  np.testing.assert_allclose(y, expected, rtol=0, atol=tol)
  no_body = {k: {**block, 'conv2': jax.tree.map(jnp.zeros_like, block['conv2'])}
             for k, block in variables['params']['body'].items()}  # Each block then adds PFCA(0) = 0.
  without = f32.apply({'params': {**variables['params'], 'body': no_body}}, x)
  assert np.abs(without - expected).max() > 20 * tol


@pytest.mark.parametrize('options, message', [
    ({'scale': 8}, 'scale=8'),
    ({'num_feat': 0}, 'num_feat=0'),
    ({'num_out_ch': 1}, 'num_out_ch=1 must equal num_in_ch=3'),
])
def test_bad_options(options, message):
  with pytest.raises(ValueError, match=message):
    models.create('msrresnet', **options)


def test_rejects_wrong_channel_count():
  model = models.create('msrresnet', scale=2, num_block=1)
  with pytest.raises(ValueError, match='3 channels'):
    model.init(jax.random.key(0), jnp.ones((1, 6, 6, 1)))
