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
  batch_stats: Any = None


def _init_fn(model: nn.Module, tx: optax.GradientTransformation, input_shape, seed: int):
  def init():
    variables = model.init(jax.random.key(seed), jnp.zeros(input_shape, jnp.float32), train=False)
    return TrainState.create(apply_fn=model.apply, params=variables.get('params', {}), tx=tx,
                             batch_stats=variables.get('batch_stats', {}))
  return init


def abstract_state(model: nn.Module, tx: optax.GradientTransformation, input_shape, seed: int, mesh: Mesh):
  """The state's shapes and dtypes with their shardings, and the shardings tree itself."""
  shapes = jax.eval_shape(_init_fn(model, tx, input_shape, seed))
  shardings = jax.tree.map(lambda _: sharding.replicated(mesh), shapes)
  abstract = jax.tree.map(lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh), shapes, shardings)
  return abstract, shardings


def create_state(model: nn.Module, tx: optax.GradientTransformation, input_shape, seed: int, shardings):
  """Initialises the state on the mesh (replicated: data parallelism)."""
  return jax.jit(_init_fn(model, tx, input_shape, seed), out_shardings=shardings)()
