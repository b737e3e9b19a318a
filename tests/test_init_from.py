"""config.init_from: a run that starts from trained weights (a run folder, a converted folder or a .pth file).

The weights at step 0 are checked by calling init_from.load and init_from.apply on the trainer's own state
(what train_and_evaluate does before its first step); the trainer itself runs once from a run folder and is
resumed after that folder is deleted. Mismatches are refused in one line before the workdir exists.
Models: a tiny MSRResNet x2 (8 features, 1 block) on a fake DIV2K, and CIFAR ResNets on the offline digits.
"""

import json
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import assert_trees_equal, checkpointed_state, host, load_repo_module
import tiny_sr

from pfca_jax import convert, models, train
from pfca_jax import run_folder
from pfca_jax.train import config_defaults, init_from, sharding, train_state
from pfca_jax.errors import UserError
from pfca_jax.models.from_config import create_model


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
  return tiny_sr.write_data(str(tmp_path_factory.mktemp('tfds')))


sr_config = tiny_sr.config


@pytest.fixture(scope='module')
def source(data_dir, tmp_path_factory):
  """A 2-step run without attention that kept an average (ema_decay 0.5, Adam 1e-2: average and weights differ)."""
  workdir = str(tmp_path_factory.mktemp('source') / 'run')
  train.train_and_evaluate(sr_config(data_dir), workdir)
  state = checkpointed_state(workdir)
  assert not np.array_equal(state['ema']['params']['conv_first']['kernel'], state['params']['conv_first']['kernel'])
  return workdir


@pytest.fixture(scope='module')
def converted_sr(source, tmp_path_factory):
  """A folder as `python -m pfca_jax.convert from_torch` writes it, holding the source's trained weights."""
  out = str(tmp_path_factory.mktemp('converted_sr') / 'folder')
  state = checkpointed_state(source)
  run_folder.write(out, sr_config(''), {'params': state['params'], 'batch_stats': {}},
                   {'file': '/elsewhere/msrresnet_x2.pth', 'key': 'params', 'sha256': '0' * 64})
  return out


def fresh_state(config, ema):
  """The trainer's state before its first step: (state, shardings, abstract state)."""
  model = create_model(config, scale=config.scale) if config.task == 'super_resolution' else \
      create_model(config, num_classes=10)
  shape = (1, 8, 8, 3) if config.task == 'super_resolution' else (1, 16, 16, 3)
  tx = optax.adam(1e-3)
  mesh = sharding.create_mesh()
  abstract, shardings = train_state.abstract_state(model, tx, shape, config.seed, mesh, ema)
  return train_state.create_state(model, tx, shape, config.seed, shardings, ema), shardings, abstract


def test_a_run_folder_gives_exactly_its_average_at_step_0_with_a_fresh_optimiser(source, data_dir):
  stored = checkpointed_state(source)
  state, shardings, abstract = fresh_state(sr_config(data_dir), ema=True)
  values, where = init_from.load(init_from.Weights(source), 'msrresnet', abstract)
  assert where == {'folder': os.path.abspath(source), 'step': 2, 'weights': 'moving average', 'arrays': 12,
                   'initialised_as_new': []}
  started = init_from.apply(state, values, shardings)
  assert_trees_equal(host(started.params), stored['ema']['params'])
  # The run's own average starts from the weights it starts from.
  assert_trees_equal(host(started.ema), {'params': stored['ema']['params'], 'batch_stats': {}})
  assert_trees_equal(host(started.opt_state), host(state.opt_state))  # Fresh: Adam's moments are zero.
  assert int(started.step) == 0
  assert init_from.describe(where) == (f'initialised from {os.path.abspath(source)}, step 2 (moving average '
                                       'weights): 12 arrays; the optimiser starts fresh')
  # A run that keeps no average of its own gets the same weights and still no average.
  started = init_from.apply(state.replace(ema={}), values, shardings)
  assert_trees_equal(host(started.params), stored['ema']['params'])
  assert started.ema == {}


def test_se_inserted_into_plain_weights_keeps_its_own_initialisation(source, data_dir):
  stored = checkpointed_state(source)
  config = sr_config(data_dir, attention='se')
  state, shardings, abstract = fresh_state(config, ema=True)
  values, where = init_from.load(init_from.Weights(source), 'msrresnet', abstract)
  assert where['initialised_as_new'] == [f'params/body/0/attention/{m}/{p}' for m in ('fc1', 'fc2')
                                         for p in ('bias', 'kernel')]
  assert 'attention arrays start from the seed' in init_from.describe(where)
  started = host(init_from.apply(state, values, shardings))
  initial = host(state.params)
  block = started.params['body']['0']
  assert_trees_equal(block['attention'], initial['body']['0']['attention'])  # As config.seed initialised them...
  without = lambda params: {k: v for k, v in params.items() if k != 'body'}
  assert_trees_equal(without(started.params), without(stored['ema']['params']))  # ...everything else loaded.
  assert_trees_equal({k: v for k, v in block.items() if k != 'attention'}, stored['ema']['params']['body']['0'])
  assert_trees_equal(started.ema['params'], started.params)


def test_a_converted_folder_gives_its_weights(converted_sr, source, data_dir):
  state, shardings, abstract = fresh_state(sr_config(data_dir), ema=True)
  values, where = init_from.load(init_from.Weights(converted_sr), 'msrresnet', abstract)
  assert where['weights'] == 'trained' and where['converted_from']['file'] == '/elsewhere/msrresnet_x2.pth'
  assert_trees_equal(host(init_from.apply(state, values, shardings).params), checkpointed_state(source)['params'])


def test_training_in_a_converted_folder_is_refused(converted_sr, data_dir):
  before = {name: os.path.getmtime(os.path.join(converted_sr, name)) for name in os.listdir(converted_sr)}
  with pytest.raises(UserError) as err:
    train.train_and_evaluate(sr_config(data_dir), converted_sr)
  assert str(err.value) == (f'{converted_sr} holds weights converted from /elsewhere/msrresnet_x2.pth by '
                            f'pfca_jax.convert, not a training run: to train from them, give '
                            f'--config.init_from={converted_sr} and a new --workdir')
  assert {name: os.path.getmtime(os.path.join(converted_sr, name)) for name in os.listdir(converted_sr)} == before


def test_the_trainer_starts_from_the_folder_and_a_resumed_run_never_reads_it_again(source, data_dir, tmp_path,
                                                                                   capsys):
  copy, workdir = str(tmp_path / 'source'), str(tmp_path / 'run')
  shutil.copytree(source, copy)
  loaded = checkpointed_state(source)['ema']['params']
  config = sr_config(data_dir, attention='pfca', init_from=copy, num_train_steps=1, checkpoint_every_steps=1,
                     eval_every_steps=1)
  train.train_and_evaluate(config, workdir)
  out = capsys.readouterr().out
  assert f'initialised from {copy}, step 2 (moving average weights): 12 arrays; the optimiser starts fresh' in out
  with open(os.path.join(workdir, 'results.json')) as f:
    results = json.load(f)
  assert results['initialised_from'] == {'folder': copy, 'step': 2, 'weights': 'moving average', 'arrays': 12,
                                         'initialised_as_new': []}
  assert results['config']['init_from'] == copy
  # One Adam step from the loaded weights: every kernel moved by about the learning rate, no further.
  after = checkpointed_state(workdir, 1)
  for new, old in zip(jax.tree.leaves(after['params']), jax.tree.leaves(loaded), strict=True):
    assert 0 < np.max(np.abs(new - old)) <= 1.5e-2
  # The run's average started at the loaded weights: ema_1 = 0.5 loaded + 0.5 params_1.
  for ema, new, old in zip(jax.tree.leaves(after['ema']['params']), jax.tree.leaves(after['params']),
                           jax.tree.leaves(loaded), strict=True):
    np.testing.assert_allclose(ema, np.float32(0.5) * old + np.float32(0.5) * new, rtol=1e-6, atol=1e-7)

  shutil.rmtree(copy)  # A resumed run continues from its own checkpoint: init_from is not even looked at.
  train.train_and_evaluate(sr_config(data_dir, attention='pfca', init_from=copy, eval_every_steps=1,
                                     checkpoint_every_steps=1), workdir)
  out = capsys.readouterr().out
  assert 'resuming at step 1 (init_from is not read: a resumed run continues from its own checkpoint)' in out
  assert 'initialised from' not in out
  assert checkpointed_state(workdir)['step'] == 2
  with open(os.path.join(workdir, 'results.json')) as f:
    assert json.load(f)['initialised_from']['folder'] == copy  # Still where the run came from.


def test_a_changed_init_from_may_resume(source, data_dir, tmp_path, capsys):
  """init_from is declared free to change on resume; a run that had none may be resumed with one named,
  which is never read: the run trains on from its own step 2 (a folder that does not exist would be refused)."""
  workdir = str(tmp_path / 'run')
  shutil.copytree(source, workdir)
  train.train_and_evaluate(sr_config(data_dir, init_from='/no/such/folder', num_train_steps=3), workdir)
  out = capsys.readouterr().out
  assert 'resuming at step 2 (init_from is not read: a resumed run continues from its own checkpoint)' in out
  assert checkpointed_state(workdir)['step'] == 3
  with open(os.path.join(workdir, 'results.json')) as f:
    results = json.load(f)
  assert results['config']['init_from'] == '/no/such/folder' and 'initialised_from' not in results


@pytest.mark.parametrize('path, message', [
    ('{tmp}/missing', "init_from '{tmp}/missing' does not exist; it takes a run folder (with checkpoints/), a folder "
                      'written by python -m pfca_jax.convert from_torch, or a PyTorch .pth file'),
    ('{tmp}', "init_from '{tmp}' is a folder without config.json and checkpoints/; it takes a run folder"),
    ('gs://bucket/run', "init_from 'gs://bucket/run' is a URL"),
])
def test_a_path_that_is_not_weights_is_refused_before_the_workdir_exists(path, message, data_dir, tmp_path):
  path = path.format(tmp=tmp_path / 'empty')
  (tmp_path / 'empty').mkdir()
  with pytest.raises(UserError) as err:
    train.train_and_evaluate(sr_config(data_dir, init_from=path), str(tmp_path / 'run'))
  assert str(err.value).startswith(message.format(tmp=tmp_path / 'empty')) and '\n' not in str(err.value)
  assert not os.path.exists(tmp_path / 'run')


# ---------------------------------------------------------------------------------------------------
# Classification: CIFAR ResNets on the offline digits (10 classes); nothing here trains.


@pytest.fixture(scope='module')
def digits_dir(tmp_path_factory):
  return str(tmp_path_factory.mktemp('digits'))


def digits_config(digits_dir, model='cifar_resnet20', **overrides):
  config = load_repo_module('configs/quickstart.py').get_config('none')
  config.update(dict(data_dir=digits_dir, batch_size=8, num_train_steps=1, compare_attentions=''))
  config.model.name = model
  config.update(overrides)
  return config


def plain_resnet20(num_classes):
  model = models.create('cifar_resnet20', num_classes=num_classes)
  return host(model.init(jax.random.key(3), jnp.zeros((1, 16, 16, 3)), train=False))


@pytest.fixture(scope='module')
def converted_cifar100(tmp_path_factory):
  """ResNet-20 weights of 100 classes, converted (the default config of from_torch: CIFAR-100)."""
  out = str(tmp_path_factory.mktemp('converted_cls') / 'folder')
  config = config_defaults.classification()
  config.model.name = 'cifar_resnet20'
  run_folder.write(out, config, plain_resnet20(100), {'file': '/elsewhere/r20.pth', 'key': None, 'sha256': '0'})
  return out


def test_weights_of_another_class_count_are_refused_before_the_workdir_exists(converted_cifar100, digits_dir,
                                                                            tmp_path):
  with pytest.raises(UserError) as err:
    train.train_and_evaluate(digits_config(digits_dir, init_from=converted_cifar100), str(tmp_path / 'run'))
  assert str(err.value) == (f"init_from {converted_cifar100} has 'params/fc/kernel' of shape (64, 100), where "
                            'cifar_resnet20 needs (64, 10)')
  assert not os.path.exists(tmp_path / 'run')


def test_a_folder_of_another_model_is_refused_before_the_workdir_exists(source, converted_cifar100, digits_dir,
                                                                       tmp_path):
  for folder, model, held in ((source, 'cifar_resnet20', 'msrresnet'),
                              (converted_cifar100, 'cifar_resnet32', 'cifar_resnet20')):
    with pytest.raises(UserError) as err:
      train.train_and_evaluate(digits_config(digits_dir, model, init_from=folder), str(tmp_path / 'run'))
    assert str(err.value) == f'init_from {folder!r} holds {held} weights; this run trains {model}'
  assert not os.path.exists(tmp_path / 'run')


# ---------------------------------------------------------------------------------------------------
# PyTorch files (need PyTorch).


def torch_state(variables, model_name, **options):
  torch = pytest.importorskip('torch', reason='PyTorch is not installed: init_from a .pth is not tested')
  return {name: torch.from_numpy(np.array(value)) for name, value in convert.flax_to_torch(variables, model_name,
                                                                                 **options).items()}


def test_a_pth_file_gives_its_weights_basicsr_average_first(source, data_dir, tmp_path):
  torch = pytest.importorskip('torch', reason='PyTorch is not installed: init_from a .pth is not tested')
  stored = checkpointed_state(source)
  sr = dict(scale=2, num_feat=8, num_block=1)
  path = str(tmp_path / 'msrresnet_x2.pth')
  torch.save({'params': torch_state({'params': stored['params']}, 'msrresnet', **sr),
              'params_ema': torch_state({'params': stored['ema']['params']}, 'msrresnet', **sr)}, path)
  config = sr_config(data_dir, attention='pfca', init_from=path)
  weights = init_from.check(config)  # The file is read once, here, and handed to load.
  assert weights.path == path and weights.key == 'params_ema'
  state, shardings, abstract = fresh_state(config, ema=True)
  values, where = init_from.load(weights, 'msrresnet', abstract)
  assert where == {'file': path, 'key': 'params_ema', 'arrays': 12, 'initialised_as_new': []}
  assert init_from.describe(where).startswith(f'initialised from {path} (params_ema): 12 arrays')
  started = host(init_from.apply(state, values, shardings))
  assert_trees_equal(started.params, stored['ema']['params'])
  assert_trees_equal(started.ema['params'], stored['ema']['params'])

  bare = str(tmp_path / 'bare.pth')  # torch.save(model.state_dict()): the trained weights, no key.
  torch.save(torch_state({'params': stored['params']}, 'msrresnet', **sr), bare)
  values, where = init_from.load(init_from.check(sr_config(data_dir, init_from=bare)), 'msrresnet', abstract)
  assert where['key'] is None
  assert_trees_equal(host(init_from.apply(state, values, shardings).params), stored['params'])


def test_a_pth_of_another_network_or_class_count_is_refused_before_the_workdir_exists(digits_dir, tmp_path):
  torch = pytest.importorskip('torch', reason='PyTorch is not installed: init_from a .pth is not tested')
  path = str(tmp_path / 'r20.pth')
  torch.save(torch_state(plain_resnet20(100), 'cifar_resnet20', num_classes=100), path)
  with pytest.raises(UserError) as err:  # ResNet-20 weights for a ResNet-32: named from the file itself.
    train.train_and_evaluate(digits_config(digits_dir, 'cifar_resnet32', init_from=path), str(tmp_path / 'run'))
  assert str(err.value) == (f"init_from {path!r} holds cifar_resnet20 (num_classes=100) weights; this run trains "
                            'cifar_resnet32')
  with pytest.raises(UserError) as err:  # 100 classes for the 10 digits.
    train.train_and_evaluate(digits_config(digits_dir, init_from=path), str(tmp_path / 'run'))
  message = str(err.value)
  assert message.startswith(f"init_from {path} has 'linear.weight' of shape (100, 64), where cifar_resnet20 needs "
                            '(10, 64)') and '\n' not in message, message
  assert not os.path.exists(tmp_path / 'run')
