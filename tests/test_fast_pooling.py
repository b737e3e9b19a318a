"""models/fast/pooling.max_pool is nn.max_pool: identical outputs, the same gradient routing on ties."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pfca_jax.models.fast.pooling import max_pool

PAD = ((1, 1), (1, 1))


def reference(x):
  return nn.max_pool(x, (3, 3), strides=(2, 2), padding=PAD)


def ours(x):
  return max_pool(x, (3, 3), (2, 2), PAD)


@pytest.mark.parametrize('shape,relu', [((2, 9, 11, 3), False), ((2, 16, 16, 8), True), ((1, 8, 7, 5), True)])
def test_outputs_and_gradients_match_nn_max_pool(shape, relu):
  x = jax.random.normal(jax.random.key(0), shape)
  if relu:  # ResNet's stem pools a ReLU output: many tied zeros in a window.
    x = jax.nn.relu(x)
  y_ref, vjp_ref = jax.vjp(reference, x)
  y, vjp = jax.vjp(ours, x)
  np.testing.assert_array_equal(y, y_ref)
  g = jax.random.normal(jax.random.key(1), y.shape)
  # Overlapping windows add their shares in another order: equal up to float32 rounding.
  np.testing.assert_allclose(vjp(g)[0], vjp_ref(g)[0], rtol=1e-6, atol=1e-6)


def test_tied_window_sends_the_gradient_to_its_first_maximum():
  x = jnp.ones((1, 6, 6, 1))
  g = jnp.arange(1.0, 10.0).reshape(1, 3, 3, 1)
  dx = jax.vjp(ours, x)[1](g)[0]
  np.testing.assert_array_equal(dx, jax.vjp(reference, x)[1](g)[0])
  assert float(dx.sum()) == float(g.sum())  # Each output's gradient lands exactly once.


def test_asymmetric_padding_is_refused():
  with pytest.raises(ValueError, match='symmetric padding'):
    max_pool(jnp.ones((1, 4, 4, 1)), (3, 3), (2, 2), ((0, 1), (0, 1)))
