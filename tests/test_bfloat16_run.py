"""Classification with `--config.model.dtype=bfloat16` (README.md: computes in bfloat16, parameters stay
float32).

test_resnet.py and test_msrresnet.py check the networks' bf16 forward pass alone. Here, first (seconds,
no compilation), the trainer's own train step for such a config, traced: every convolution, forward and
backward, is bf16, and the state it returns is float32. Then (`slow`: two ResNet-20 runs, ~30 s of
compilation each on 2 CPU cores) a whole run: it completes and records its dtype, every saved parameter,
BatchNorm statistic and optimiser moment is float32, the losses are finite and fall, and it computed in
bf16 at all (and did not quietly train in float32, the config's dtype dropped on the way to the model):
against the same run in float32 (same batches, same initial weights) its first loss agrees to bf16's
precision and is not the float32 one.
"""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import checkpointed_state

from pfca_jax import train
from pfca_jax.train import config_defaults, loop, steps

STEPS = 8  # Two passes over the synthetic data's 4 cycled batches: step s and s + 4 train on the same batch.


def cls_config(dtype: str):
  """CIFAR ResNet-20 + PFCA (the smallest network with BatchNorm and attention) on 8x8 synthetic images."""
  config = config_defaults.classification()
  config.update(dict(dataset='synthetic', batch_size=16, eval_batch_size=16, image_size=8, num_train_steps=STEPS,
                     log_every_steps=1, eval_every_steps=STEPS, checkpoint_every_steps=STEPS))
  config.synthetic.update(dict(num_classes=5, train_examples=64, eval_examples=16))
  config.model.update(name='cifar_resnet20', attention='pfca', dtype=dtype)
  return config


def _equations(jaxpr):
  """Every equation of a jaxpr, those of its sub-jaxprs (jit, custom derivatives, scans) included."""
  for eqn in jaxpr.eqns:
    yield eqn
    for param in eqn.params.values():
      for sub in param if isinstance(param, (list, tuple)) else [param]:
        sub = getattr(sub, 'jaxpr', sub)  # A ClosedJaxpr's Jaxpr.
        if hasattr(sub, 'eqns'):
          yield from _equations(sub)


def floating_dtypes(tree) -> set:
  return {str(leaf.dtype) for leaf in jax.tree.leaves(tree) if jnp.issubdtype(leaf.dtype, jnp.floating)}


def test_the_trainers_step_convolves_in_bfloat16_and_returns_a_float32_state(tmp_path):
  # prepare() is the trainer's own set-up (checks, model, abstract state), without writing or compiling.
  plan = loop.prepare(cls_config('bfloat16'), str(tmp_path / 'run'))
  step = steps.make_train_step(plan.task.loss, plan.schedule, plan.shardings, plan.mesh,
                               input_key=plan.task.input_key)
  batch = {'image': jax.ShapeDtypeStruct((16, 8, 8, 3), jnp.float32), 'label': jax.ShapeDtypeStruct((16,), jnp.int32)}
  jaxpr = jax.make_jaxpr(step)(plan.abstract, batch)
  convolutions = [str(eqn.outvars[0].aval.dtype) for eqn in _equations(jaxpr.jaxpr)
                  if eqn.primitive.name == 'conv_general_dilated']
  # ResNet-20: 21 convolutions forward (19 + 2 shortcuts), about twice as many backward.
  assert len(convolutions) > 3 * 19 and set(convolutions) == {'bfloat16'}
  # What the step returns, the new state (parameters, BN statistics, optimiser moments) and its metrics (the
  # loss included), is float32, as is the state it starts from.
  assert floating_dtypes(plan.abstract) == floating_dtypes(jaxpr.out_avals) == {'float32'}
  assert not os.path.exists(tmp_path / 'run')


@pytest.fixture(scope='module')
def runs(tmp_path_factory):
  """{dtype: workdir} of the same run in float32 and in bfloat16."""
  root = tmp_path_factory.mktemp('dtype')
  workdirs = {dtype: str(root / dtype) for dtype in ('float32', 'bfloat16')}
  for dtype, workdir in workdirs.items():
    train.train_and_evaluate(cls_config(dtype), workdir)
  return workdirs


def train_losses(workdir: str) -> list[float]:
  rows = [json.loads(line) for line in open(os.path.join(workdir, 'metrics.jsonl'))]
  losses = {row['step']: row['train/loss'] for row in rows if 'train/loss' in row}
  assert sorted(losses) == list(range(1, STEPS + 1))
  return [losses[step] for step in range(1, STEPS + 1)]


@pytest.mark.slow
def test_a_bfloat16_run_completes_records_its_dtype_and_keeps_every_saved_value_float32(runs):
  results = json.load(open(os.path.join(runs['bfloat16'], 'results.json')))
  assert results['status'] == 'completed' and results['steps'] == STEPS
  assert results['config']['model']['dtype'] == 'bfloat16'
  assert np.isfinite(results['final']['eval/test/loss'])
  state = checkpointed_state(runs['bfloat16'], STEPS)
  # jnp.issubdtype: NumPy's own does not count bfloat16 (an ml_dtypes type) as floating.
  floats = {jax.tree_util.keystr(path): leaf.dtype for path, leaf in jax.tree_util.tree_flatten_with_path(state)[0]
            if jnp.issubdtype(leaf.dtype, jnp.floating)}
  # Parameters, BatchNorm statistics and the optimiser's momentum all present, all float32.
  assert any('params' in name for name in floats) and any('batch_stats' in name for name in floats)
  assert any('opt_state' in name or 'trace' in name for name in floats), sorted(floats)[:5]
  assert {name: dtype for name, dtype in floats.items() if dtype != np.float32} == {}


@pytest.mark.slow
def test_the_bfloat16_losses_are_finite_and_fall_on_the_same_batches(runs):
  losses = train_losses(runs['bfloat16'])
  assert all(np.isfinite(losses))
  later, earlier = losses[4:], losses[:4]  # The same 4 batches, seen a second time after 4 updates.
  assert all(b < a for a, b in zip(earlier, later, strict=True)), losses


@pytest.mark.slow
def test_the_run_computes_in_bfloat16_not_float32(runs):
  bf16, f32 = train_losses(runs['bfloat16']), train_losses(runs['float32'])
  # Step 1: the same initial weights on the same batch. bf16 keeps 8 bits of mantissa (relative rounding
  # ~4e-3 per operation), so its loss differs from float32's, though not by much; float32 runs agree to
  # the last bit (test_train_classification.py's resumed run), so any difference is the compute dtype.
  assert bf16[0] != f32[0]
  assert bf16[0] == pytest.approx(f32[0], rel=0.05)
  assert abs(bf16[0] - f32[0]) / f32[0] > 1e-5, (bf16[0], f32[0])
