"""The training state, created directly in its sharded placement.

`jax.eval_shape` gives the state's structure without computing it; from it come the shardings,
and `jax.jit(init, out_shardings=...)` then materialises every array where it belongs, so no
full copy ever sits on one device first. The same abstract state is the restore target of a
checkpoint.
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax.training import train_state
from jax.sharding import Mesh

from pfca_jax.train import sharding


class TrainState(train_state.TrainState):
  """flax's TrainState plus BatchNorm statistics and the exponential moving average of the weights.

  ema: {'params': ..., 'batch_stats': ...} averaged after every step with config.ema_decay (`steps`),
    starting from the initial weights (BasicSR's `model_ema(0)`); {} when the run keeps no average.
  """
  batch_stats: Any = None
  ema: Any = None


def live_weights(state) -> dict:
  """{'params', 'batch_stats'}: the weights the optimiser trains, the ones the moving average follows."""
  return {'params': state.params, 'batch_stats': state.batch_stats}


def _init_fn(model: nn.Module, tx: optax.GradientTransformation, input_shape, seed: int, ema: bool):
  def init():
    variables = model.init(jax.random.key(seed), jnp.zeros(input_shape, jnp.float32), train=False)
    state = TrainState.create(apply_fn=model.apply, params=variables.get('params', {}), tx=tx,
                              batch_stats=variables.get('batch_stats', {}), ema={})
    return state.replace(ema=jax.tree.map(jnp.copy, live_weights(state))) if ema else state
  return init


def abstract_state(model: nn.Module, tx: optax.GradientTransformation, input_shape, seed: int, mesh: Mesh,
                   ema: bool = False):
  """The state's shapes and dtypes with their shardings, and the shardings tree itself."""
  shapes = jax.eval_shape(_init_fn(model, tx, input_shape, seed, ema))
  shardings = jax.tree.map(lambda _: sharding.replicated(mesh), shapes)
  abstract = jax.tree.map(lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh), shapes, shardings)
  return abstract, shardings


def create_state(model: nn.Module, tx: optax.GradientTransformation, input_shape, seed: int, shardings,
                 ema: bool = False):
  """Initialises the state on the mesh (replicated: data parallelism)."""
  return jax.jit(_init_fn(model, tx, input_shape, seed, ema), out_shardings=shardings)()
