"""The jitted train and eval steps, with their shardings and buffer donation.

Both steps are task-agnostic: a task supplies `loss_fn(outputs, batch) -> (loss, metrics)` and
`sums_fn(outputs, batch) -> {name: sum}`.
"""

from typing import Callable

import jax
import jax.numpy as jnp
import optax

from pfca_jax.train import sharding, train_state


def make_train_step(loss_fn: Callable, schedule: optax.Schedule, state_shardings, mesh, input_key: str = 'image',
                    ema_decay: float = 0.0):
  """Returns step(state, batch) -> (state, metrics); the old state's buffers are donated.

  ema_decay > 0: after the update, state.ema = ema_decay * state.ema + (1 - ema_decay) * the new weights
  (parameters and BatchNorm statistics), BasicSR's `model_ema` (0.999 in its MSRResNet recipe).
  """

  def step(state, batch):
    def objective(params):
      variables = {'params': params}
      mutable = []
      if state.batch_stats:
        variables['batch_stats'] = state.batch_stats
        mutable = ['batch_stats']
      outputs, updates = state.apply_fn(variables, batch[input_key], train=True, mutable=mutable)
      loss, metrics = loss_fn(outputs, batch)
      return loss, (metrics, updates)

    (loss, (metrics, updates)), grads = jax.value_and_grad(objective, has_aux=True)(state.params)
    new_state = state.apply_gradients(grads=grads)
    if state.batch_stats:
      new_state = new_state.replace(batch_stats=updates['batch_stats'])
    if ema_decay:
      new_state = new_state.replace(ema=jax.tree.map(lambda e, w: ema_decay * e + (1.0 - ema_decay) * w,
                                                     state.ema, train_state.live_weights(new_state)))
    metrics = dict(metrics, loss=loss, grad_norm=optax.tree.norm(grads), lr=schedule(state.step))
    return new_state, metrics

  return jax.jit(step, in_shardings=(state_shardings, sharding.batch_sharded(mesh)),
                 out_shardings=(state_shardings, sharding.replicated(mesh)), donate_argnums=(0,))


def eval_variables(state) -> dict:
  """The weights evaluation scores: the moving average's when the run keeps one (config.ema_decay > 0, as
  BasicSR evaluates and releases its EMA network), else the trained ones; empty collections left out."""
  weights = state.ema if state.ema else train_state.live_weights(state)
  return {name: tree for name, tree in weights.items() if tree}


def _forward(state, batch):
  return state.apply_fn(eval_variables(state), batch['image'], train=False)


class EvalStep:
  """step(state, batch, totals) -> totals + this batch's sums, kept on device until the end."""

  def __init__(self, sums_fn: Callable, state_shardings, mesh):
    self._sums_fn = sums_fn
    self._replicated = sharding.replicated(mesh)
    self._step = jax.jit(lambda state, batch, totals: jax.tree.map(jnp.add, totals, sums_fn(_forward(state, batch), batch)),
                         in_shardings=(state_shardings, sharding.batch_sharded(mesh), self._replicated),
                         out_shardings=self._replicated, donate_argnums=(2,))

  def zeros(self, state, batch):
    """Zero totals of the right structure, found by tracing shapes only (nothing compiled for the model)."""
    shapes = jax.eval_shape(lambda s, b: self._sums_fn(_forward(s, b), b), state, batch)
    return jax.jit(lambda: jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes),
                   out_shardings=self._replicated)()

  def __call__(self, state, batch, totals):
    return self._step(state, batch, totals)


class EvaluationStopped(Exception):
  """A stop request (SIGTERM, Ctrl-C) ended an evaluation part-way; the trainer checkpoints and stops."""


def evaluate(eval_step: EvalStep, state, batches, stop: Callable[[], bool] | None = None) -> dict:
  """Sums over every (already global) batch, returned on the host.

  stop: asked before each batch; when it says True, EvaluationStopped is raised, so a preemption's grace
  period is not spent on an evaluation whose result would be thrown away.
  """
  totals = None
  for batch in batches:
    if stop is not None and stop():
      raise EvaluationStopped()
    if totals is None:
      totals = eval_step.zeros(state, batch)
    totals = eval_step(state, batch, totals)
  if totals is None:
    raise ValueError('evaluation got no batches')
  return jax.device_get(totals)


def make_state_check(abstract_state, state_shardings, mesh) -> Callable:
  """Returns check(state) -> the name of the first array of the state holding NaN or Inf, or None.

  Run before every save: a finite loss and gradient norm at step S say nothing about the update of
  step S, which can overflow the parameters, the optimiser's moments or BatchNorm's statistics.
  One reduction per floating-point array, fetched as one small vector; compiled here, from the abstract
  state, so that a stop request's checkpoint does not wait for a compilation.
  """
  def all_finite(state):
    leaves = [x for x in jax.tree.leaves(state) if jnp.issubdtype(x.dtype, jnp.inexact)]
    return jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves])

  compiled = jax.jit(all_finite, in_shardings=(state_shardings,),
                     out_shardings=sharding.replicated(mesh)).lower(abstract_state).compile()

  def check(state) -> str | None:
    finite = jax.device_get(compiled(state))
    if finite.all():
      return None
    paths = [path for path, x in jax.tree_util.tree_flatten_with_path(state)[0]
             if jnp.issubdtype(x.dtype, jnp.inexact)]
    return _path_name(paths[int(finite.argmin())])

  return check


def _path_name(path) -> str:
  """(GetAttrKey('params'), DictKey('conv1'), ...) -> 'params/conv1/...'."""
  return '/'.join(str(getattr(key, 'name', getattr(key, 'key', getattr(key, 'idx', key)))) for key in path)
