"""End to end under tfds.testing.mock_data on 8 simulated devices: train_and_evaluate writes
checkpoints, TensorBoard events and results.json; SIGTERM checkpoints and resuming is exact.
Bad configs, workdirs and data folders are refused in test_bad_inputs.py's table; divergence in test_faults.py."""

import glob
import json
import os
import signal

import pytest
from conftest import assert_trees_equal, checkpointed_state, load_repo_module
import tensorflow as tf
import tensorflow_datasets as tfds

from pfca_jax import train
from pfca_jax.data import classification as data
from pfca_jax.train import checkpointing


def load_config(name, arg=None, **overrides):
  config = load_repo_module(f'configs/{name}.py').get_config(arg)
  config.lock()
  for key, value in overrides.items():
    target = config
    *path, leaf = key.split('.')
    for part in path:
      target = target[part]
    target[leaf] = value
  return config


def tiny_cifar(**overrides):
  settings = dict(batch_size=16, eval_batch_size=16, num_train_steps=4, log_every_steps=2,
                  eval_every_steps=4, checkpoint_every_steps=2, shuffle_buffer_size=64)
  settings.update(overrides)
  return load_config('cifar100_resnet20', 'pfca', **settings)


@pytest.fixture(autouse=True)
def synchronous_checkpoints(monkeypatch):
  # tfds.testing.mock_data patches epath globally while a dataset is being built, and would redirect
  # the rename that ends an asynchronous orbax save running at that moment: tests save synchronously.
  save = checkpointing.Checkpoints.save

  def save_and_wait(self, *args, **kwargs):
    save(self, *args, **kwargs)
    self._manager.wait_until_finished()

  monkeypatch.setattr(checkpointing.Checkpoints, 'save', save_and_wait)


@pytest.fixture
def mock_cifar():
  with tfds.testing.mock_data(num_examples=40):
    yield


def scalar_tags(workdir):
  tags = set()
  for path in glob.glob(os.path.join(workdir, 'events.out.tfevents.*')):
    for event in tf.compat.v1.train.summary_iterator(path):
      for value in event.summary.value:
        tags.add(value.tag)
  return tags


def test_cifar100_end_to_end(tmp_path, mock_cifar):
  workdir = str(tmp_path / 'run')
  final = train.train_and_evaluate(tiny_cifar(), workdir)
  results = json.load(open(os.path.join(workdir, 'results.json')))
  assert results['final'] == final and results['status'] == 'completed'
  assert results['steps'] == 4 and results['params'] == 278_324 and results['devices'] == 8
  assert results['final']['eval/test/examples'] == 40
  assert 0.0 <= results['final']['eval/test/top1'] <= results['final']['eval/test/top5'] <= 1.0
  assert results['best']['eval/test/top1'] == results['final']['eval/test/top1']
  assert results['config']['model']['attention'] == 'pfca' and results['wall_time_s'] > 0
  assert sorted(os.listdir(os.path.join(workdir, 'checkpoints'))) == ['2', '4']
  tags = scalar_tags(workdir)
  for tag in ('train/loss', 'train/accuracy', 'train/lr', 'train/grad_norm', 'train/images_per_sec',
              'eval/test/top1', 'eval/test/top5'):
    assert tag in tags, (tag, tags)


def test_imagenet_end_to_end(tmp_path):
  """The ImageNet pipeline (JPEGs of random sizes, random-resized crops, resize-and-crop evaluation) through
  the trainer. The network is the smallest that runs it (CIFAR ResNet-20, with SE to train one through the
  trainer): ResNet-18's ImageNet stem is tested in test_resnet.py and compiled here it cost twice the time."""
  config = load_config('imagenet_resnet18', 'se', batch_size=8, eval_batch_size=8, num_train_steps=2,
                       log_every_steps=1, eval_every_steps=2, checkpoint_every_steps=2, image_size=32,
                       eval_resize_size=36, shuffle_buffer_size=16, **{'model.name': 'cifar_resnet20'})
  workdir = str(tmp_path / 'run')
  with tfds.testing.mock_data(num_examples=12):  # Mocked ImageNet JPEGs have random sizes.
    final = train.train_and_evaluate(config, workdir)
  assert final['eval/validation/examples'] == 12
  results = json.load(open(os.path.join(workdir, 'results.json')))
  # ResNet-20 with 100 classes has 278,324 parameters; 1000 classes add 900 x (64 + 1); SE adds 2c^2/16 + c/16 + c
  # per block, 3 blocks of each width.
  assert results['params'] == 278_324 + 900 * 65 + 3 * sum(2 * c * c // 16 + c // 16 + c for c in (16, 32, 64))
  assert 'eval/validation/top5' in scalar_tags(workdir)


@pytest.mark.slow
def test_sigterm_checkpoints_and_resume_is_bit_identical(tmp_path, mock_cifar, monkeypatch):
  straight = str(tmp_path / 'straight')
  train.train_and_evaluate(tiny_cifar(checkpoint_every_steps=100), straight)

  # Interrupted: SIGTERM arrives while the 3rd batch is being prepared; the loop finishes that
  # step, checkpoints it and raises TrainingStopped.
  original = data.train_iterator

  def interrupted_iterator(config, info, start_step=0):
    for i, batch in enumerate(original(config, info, start_step=start_step)):
      if start_step == 0 and i == 2:
        os.kill(os.getpid(), signal.SIGTERM)
      yield batch

  resumed = str(tmp_path / 'resumed')
  monkeypatch.setattr(data, 'train_iterator', interrupted_iterator)
  with pytest.raises(checkpointing.TrainingStopped, match='SIGTERM: checkpoint of step [23] saved') as stopped:
    train.train_and_evaluate(tiny_cifar(checkpoint_every_steps=100), resumed)
  assert stopped.value.exit_status == 128 + signal.SIGTERM
  steps_saved = sorted(int(s) for s in os.listdir(os.path.join(resumed, 'checkpoints')))
  assert steps_saved and steps_saved[-1] < 4, steps_saved
  assert not os.path.exists(os.path.join(resumed, 'results.json'))
  assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # Handlers are given back.

  train.train_and_evaluate(tiny_cifar(checkpoint_every_steps=100), resumed)
  a, b = checkpointed_state(straight, 4), checkpointed_state(resumed, 4)
  assert a is not None and b is not None
  assert_trees_equal(a, b)
  assert json.load(open(os.path.join(resumed, 'results.json')))['steps'] == 4
