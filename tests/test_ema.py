"""config.ema_decay: the moving average of the weights, its update, what evaluation scores, its checkpoints.

The update is checked on a toy network through the real train step; the rest through train_and_evaluate on a
tiny MSRResNet x2 (8 features, 1 block) over a fake prepared DIV2K of photo crops: evaluation scores the
average, a resumed run ends bit-identical to an uninterrupted one (average included), a checkpoint written
before runs kept an average still resumes, and ema_decay outside [0, 1) is refused in one line.
"""

import json
import os
import shutil

import flax.linen as nn
import jax
import numpy as np
import optax
import pytest
import skimage.data
from conftest import assert_trees_equal, checkpointed_state, host
import tiny_sr

from pfca_jax import metrics, train
from pfca_jax.imresize import imresize
from pfca_jax.tasks import classification, losses
from pfca_jax.tasks.tiling import to_uint8
from pfca_jax.train import checkpointing, config_defaults, sharding, steps, train_state
from pfca_jax.errors import UserError
from pfca_jax.models.from_config import create_model
from pfca_jax.train.validation import check_training

# ---------------------------------------------------------------------------------------------------
# The update itself, on a toy network with BatchNorm (so that the statistics are averaged too).


class Toy(nn.Module):
  @nn.compact
  def __call__(self, x, train: bool = False):
    x = nn.Conv(4, (3, 3), name='conv')(x)
    x = nn.BatchNorm(use_running_average=not train, momentum=0.5, name='bn')(x)
    return nn.Dense(10, name='fc')(x.mean(axis=(1, 2)))


INPUT = (1, 4, 4, 3)


def toy_batch(seed):
  rng = np.random.default_rng(seed)
  return {'image': rng.normal(size=(8, *INPUT[1:])).astype(np.float32), 'label': rng.integers(0, 10, 8),
          'mask': np.ones(8, bool)}


def toy(ema_decay):
  """(state, train step, mesh, shardings) of the toy network under SGD 0.5 (large steps: the average lags visibly)."""
  mesh = sharding.create_mesh()
  model, tx = Toy(), optax.sgd(0.5)
  _, shardings = train_state.abstract_state(model, tx, INPUT, 0, mesh, ema_decay > 0)
  state = train_state.create_state(model, tx, INPUT, 0, shardings, ema_decay > 0)
  loss = lambda logits, batch: losses.train_loss(logits, batch, 0.0)
  step = steps.make_train_step(loss, optax.constant_schedule(0.5), shardings, mesh, ema_decay=ema_decay)
  return state, step, mesh, shardings


def test_the_average_starts_at_the_initial_weights_and_follows_each_update():
  decay = 0.75
  state, step, mesh, _ = toy(decay)
  live = host(train_state.live_weights(state))
  assert set(live) == {'params', 'batch_stats'} and jax.tree.leaves(live['batch_stats'])
  assert_trees_equal(host(state.ema), live)  # BasicSR's model_ema(0): a copy of the initial weights.
  average = live
  for i in range(3):
    state, _ = step(state, sharding.to_global(toy_batch(i), sharding.batch_sharded(mesh)))
    new, ema = host(train_state.live_weights(state)), host(state.ema)
    assert not np.array_equal(new['params']['fc']['kernel'], live['params']['fc']['kernel'])  # It trained.
    for got, old, w in zip(jax.tree.leaves(ema), jax.tree.leaves(average), jax.tree.leaves(new), strict=True):
      assert got.dtype == np.float32
      expected = np.float32(decay) * old + np.float32(1 - decay) * w
      # Float32 rounding of the two products and the sum (XLA may fuse them), nothing more.
      bound = 4 * np.finfo(np.float32).eps * (np.abs(decay * old) + np.abs((1 - decay) * w)) + 1e-30
      assert np.all(np.abs(got - expected) <= bound), np.max(np.abs(got - expected) - bound)
    # The average lags behind the weights it follows.
    assert not np.array_equal(ema['params']['fc']['kernel'], new['params']['fc']['kernel'])
    average, live = ema, new


def test_without_a_decay_there_is_no_average_and_evaluation_scores_the_trained_weights():
  state, step, mesh, shardings = toy(0.0)
  assert state.ema == {}
  state, _ = step(state, sharding.to_global(toy_batch(0), sharding.batch_sharded(mesh)))
  assert state.ema == {}
  variables = steps.eval_variables(state)
  assert set(variables) == {'params', 'batch_stats'}
  assert_trees_equal(host(variables), host(train_state.live_weights(state)))
  expected = Toy().apply(host(train_state.live_weights(state)), toy_batch(5)['image'])
  np.testing.assert_allclose(eval_loss(state, mesh, shardings), ref_loss(expected), rtol=1e-5)


def eval_loss(state, mesh, shardings):
  eval_step = steps.EvalStep(classification.eval_sums, shardings, mesh)
  sums = steps.evaluate(eval_step, state, sharding.prefetch_to_devices([toy_batch(5)], sharding.batch_sharded(mesh)))
  return classification.eval_metrics(sums)['loss']


def ref_loss(logits):
  logits = np.asarray(logits, np.float64)
  labels = toy_batch(5)['label']
  return np.mean(np.log(np.exp(logits).sum(1)) - logits[np.arange(8), labels])


def test_evaluation_scores_the_average_when_one_is_kept():
  state, step, mesh, shardings = toy(0.5)
  for i in range(2):
    state, _ = step(state, sharding.to_global(toy_batch(i), sharding.batch_sharded(mesh)))
  assert_trees_equal(host(steps.eval_variables(state)), host(state.ema))
  on_average = ref_loss(Toy().apply(host(state.ema), toy_batch(5)['image']))
  on_live = ref_loss(Toy().apply(host(train_state.live_weights(state)), toy_batch(5)['image']))
  assert abs(on_average - on_live) > 1e-3  # The test can tell them apart...
  np.testing.assert_allclose(eval_loss(state, mesh, shardings), on_average, rtol=1e-5)  # ...and it is the average.


def test_eval_variables_leave_out_empty_collections():
  """MSRResNet has no BatchNorm: its average is {'params': ..., 'batch_stats': {}}, evaluated as {'params'}."""
  state = train_state.TrainState.create(apply_fn=None, params={'w': np.ones(2)}, tx=optax.sgd(1.0), batch_stats={},
                                        ema={'params': {'w': np.zeros(2)}, 'batch_stats': {}})
  assert list(steps.eval_variables(state)) == ['params']
  np.testing.assert_array_equal(steps.eval_variables(state)['params']['w'], np.zeros(2))
  assert list(steps.eval_variables(state.replace(ema={}))) == ['params']


@pytest.mark.parametrize('decay', [1.0, -0.1, 1.5])
def test_a_decay_outside_0_1_is_refused_in_one_line_before_anything_is_written(decay, data_dir, tmp_path):
  config = sr_config(data_dir, ema_decay=decay)
  with pytest.raises(UserError) as err:
    check_training(config)
  assert str(err.value) == f'ema_decay={decay!r} must be in [0, 1): 0 keeps no moving average, BasicSR uses 0.999'
  with pytest.raises(UserError, match=r'ema_decay=.* must be in \[0, 1\)') as err:
    train.train_and_evaluate(config, str(tmp_path / 'run'))
  assert '\n' not in str(err.value) and not os.path.exists(tmp_path / 'run')


def test_the_defaults_keep_basicsr_average_for_div2k_and_none_for_classification_and_the_sr_quickstart():
  from conftest import load_repo_module
  assert config_defaults.super_resolution(scale=4).ema_decay == 0.999
  assert config_defaults.classification().ema_decay == 0.0
  assert load_repo_module('configs/div2k_msrresnet_x2.py').get_config(None).ema_decay == 0.999
  assert load_repo_module('configs/quickstart_sr.py').get_config(None).ema_decay == 0.0


# ---------------------------------------------------------------------------------------------------
# Through the trainer: a tiny MSRResNet x2 on fake DIV2K.


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
  return tiny_sr.write_data(str(tmp_path_factory.mktemp('tfds')))


def sr_config(data_dir, **overrides):
  """4 steps with PFCA, logged and checkpointed every 2."""
  return tiny_sr.config(data_dir, attention='pfca', **{**dict(num_train_steps=4, log_every_steps=2,
                                                              eval_every_steps=4), **overrides})


@pytest.fixture(scope='module')
def ema_run(data_dir, tmp_path_factory):
  """4 steps with ema_decay 0.5, checkpoints at steps 2 and 4."""
  workdir = str(tmp_path_factory.mktemp('ema') / 'run')
  train.train_and_evaluate(sr_config(data_dir), workdir)
  return workdir


@pytest.fixture(scope='module')
def plain_run(data_dir, tmp_path_factory):
  """The same run without an average (ema_decay 0)."""
  workdir = str(tmp_path_factory.mktemp('plain') / 'run')
  train.train_and_evaluate(sr_config(data_dir, ema_decay=0.0), workdir)
  return workdir


def psnr_of(config, params):
  """Y-PSNR of the validation crop upscaled by `params`, computed here as evaluation does."""
  hr = skimage.data.coffee()[100:132, 200:240]
  lr = imresize(hr, 0.5)[None].astype(np.float32) / 255
  sr = to_uint8(np.asarray(jax.jit(create_model(config, scale=2).apply)({'params': params}, lr))[0])
  return metrics.psnr(sr, hr, 2)


def scored(workdir):
  with open(os.path.join(workdir, 'results.json')) as f:
    return json.load(f)['per_image']['div2k'][0]['psnr_y']


def test_an_sr_run_checkpoints_the_average_and_evaluates_it(ema_run, data_dir):
  state = checkpointed_state(ema_run, 4)
  assert set(state['ema']) == {'params', 'batch_stats'} and state['ema']['batch_stats'] == {}
  assert jax.tree.structure(state['ema']['params']) == jax.tree.structure(state['params'])
  config = sr_config(data_dir)
  on_average, on_live = psnr_of(config, state['ema']['params']), psnr_of(config, state['params'])
  assert abs(on_average - on_live) > 1e-3, (on_average, on_live)  # The scores tell the two apart.
  assert scored(ema_run) == pytest.approx(on_average, abs=1e-5)


def test_a_run_without_a_decay_keeps_no_average_and_evaluates_the_trained_weights(plain_run, data_dir):
  state = checkpointed_state(plain_run, 4)
  assert state['ema'] == {}
  assert scored(plain_run) == pytest.approx(psnr_of(sr_config(data_dir), state['params']), abs=1e-5)


def test_a_resumed_run_ends_bit_identical_to_an_uninterrupted_one_average_included(ema_run, data_dir, tmp_path):
  # The uninterrupted run as a kill right after its step-2 checkpoint would have left it.
  workdir = str(tmp_path / 'run')
  shutil.copytree(ema_run, workdir)
  shutil.rmtree(os.path.join(workdir, 'checkpoints', '4'))
  os.remove(os.path.join(workdir, 'results.json'))
  train.train_and_evaluate(sr_config(data_dir), workdir)
  straight, resumed = checkpointed_state(ema_run, 4), checkpointed_state(workdir, 4)
  assert int(resumed['step']) == 4
  assert_trees_equal(resumed, straight)  # params, opt_state, step AND the average.
  assert not np.array_equal(straight['ema']['params']['conv_first']['kernel'],
                            checkpointed_state(ema_run, 2)['ema']['params']['conv_first']['kernel'])


def test_a_checkpoint_written_before_runs_kept_an_average_resumes_without_one(plain_run, data_dir, tmp_path):
  """An old checkpoint: no `ema` entry in the state, no ema_decay or init_from in the recorded config."""
  old = str(tmp_path / 'old')
  shutil.copytree(plain_run, old, ignore=shutil.ignore_patterns('checkpoints', 'results.json'))
  with checkpointing.reading(plain_run) as (manager, _):
    stored, meta = checkpointing.restore(manager, 2)
  assert 'ema' in stored
  stored = {key: value for key, value in stored.items() if key != 'ema'}
  del meta['config']['ema_decay'], meta['config']['init_from']
  checkpoints = checkpointing.Checkpoints(old, keep=3)
  checkpoints.save(2, stored, meta)
  checkpoints.close()
  with open(os.path.join(old, 'config.json')) as f:
    config_json = {k: v for k, v in json.load(f).items() if k not in ('ema_decay', 'init_from')}
  with open(os.path.join(old, 'config.json'), 'w') as f:
    json.dump(config_json, f)
  with checkpointing.reading(old) as (manager, step):
    assert step == 2 and 'ema' not in manager.item_metadata(2)['state'].tree

  before = sorted(os.listdir(old))
  with pytest.raises(UserError) as err:  # Such a run kept no average: asking for one is another run.
    train.train_and_evaluate(sr_config(data_dir, ema_decay=0.999), old)
  assert '  ema_decay: checkpoint 0.0, this run 0.999' in str(err.value).splitlines()
  assert sorted(os.listdir(old)) == before and os.listdir(os.path.join(old, 'checkpoints')) == ['2']

  train.train_and_evaluate(sr_config(data_dir, ema_decay=0.0), old)  # Read as ema_decay 0: the same run.
  resumed, straight = checkpointed_state(old, 4), checkpointed_state(plain_run, 4)
  assert resumed['ema'] == {}
  assert_trees_equal(resumed, straight)
