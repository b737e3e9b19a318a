"""A run is its config: resuming with another one is refused field by field and leaves the workdir as it was;
the declared fields may change; a longer run only where the learning rate of the steps taken is unchanged;
results.json and config.json say what produced them."""

import hashlib
import json
import os
import re
import shutil
import subprocess
import time

import jax
import ml_collections
import pytest
import tensorflow_datasets as tfds
from conftest import REPO
from test_train_classification import mock_cifar, synchronous_checkpoints, tiny_cifar  # noqa: F401 -- fixtures.

from pfca_jax import train
from pfca_jax.train import checkpointing, config_defaults, metrics_log, run_identity
from pfca_jax.errors import UserError


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
  """A 2-step CIFAR ResNet-20 + PFCA run (step schedule), checkpointed at steps 1 and 2."""
  workdir = str(tmp_path_factory.mktemp('run'))
  with pytest.MonkeyPatch.context() as patch, tfds.testing.mock_data(num_examples=40):
    save = checkpointing.Checkpoints.save
    patch.setattr(checkpointing.Checkpoints, 'save',
                  lambda self, *a, **k: (save(self, *a, **k), self._manager.wait_until_finished()))
    train.train_and_evaluate(tiny_cifar(num_train_steps=2, checkpoint_every_steps=1, eval_every_steps=2), workdir)
  return workdir


def snapshot(workdir):
  """Every file under workdir with a hash of its bytes."""
  files = {}
  for folder, _, names in os.walk(workdir):
    for name in names:
      path = os.path.join(folder, name)
      with open(path, 'rb') as f:
        files[os.path.relpath(path, workdir)] = hashlib.sha256(f.read()).hexdigest()
  return files


REFUSED = [
    ({'model.zero_init_last_bn': True}, ['model.zero_init_last_bn: checkpoint False, this run True']),
    ({'model.attention': 'simam'}, ["model.attention: checkpoint 'pfca', this run 'simam'"]),
    ({'model.attention_options': 'lam=1e-3'}, ["model.attention_options: checkpoint '', this run 'lam=1e-3'"]),
    ({'model.attention_position': 'post_conv'}, ["model.attention_position: checkpoint 'auto', this run 'post_conv'"]),
    ({'model.dtype': 'bfloat16'}, ["model.dtype: checkpoint 'float32', this run 'bfloat16'"]),
    ({'base_learning_rate': 0.05, 'momentum': 0.8},
     ['base_learning_rate: checkpoint 0.1, this run 0.05', 'momentum: checkpoint 0.9, this run 0.8']),
    ({'schedule': 'cosine'}, ["schedule: checkpoint 'step', this run 'cosine'"]),
    ({'lr_boundaries_epochs': (10, 20)}, ['lr_boundaries_epochs: checkpoint (81, 122), this run (10, 20)']),
    ({'weight_decay': 1e-4}, ['weight_decay: checkpoint 0.0005, this run 0.0001']),
    ({'crop_padding': 2}, ['crop_padding: checkpoint 4, this run 2']),
    ({'shuffle_buffer_size': 32}, ['shuffle_buffer_size: checkpoint 64, this run 32']),
    ({'batch_size': 8}, ['batch_size: checkpoint 16, this run 8']),
    ({'seed': 1}, ['seed: checkpoint 0, this run 1']),
]


@pytest.mark.parametrize('overrides, lines', REFUSED, ids=[','.join(o) for o, _ in REFUSED])
def test_resume_with_another_config_is_refused_and_touches_nothing(trained, overrides, lines):
  before = snapshot(trained)
  with pytest.raises(UserError) as err:
    train.train_and_evaluate(tiny_cifar(num_train_steps=2, checkpoint_every_steps=1, **overrides), trained)
  message = str(err.value).splitlines()
  assert message[0] == f'the run in {trained} was trained with another config; resuming it with this one would ' \
                       'continue a different run:'
  assert [line.strip() for line in message[1:-1]] == lines
  assert 'give it a new --workdir' in message[-1]
  assert snapshot(trained) == before  # No checkpoint, no config.json, no event file written.


def test_declared_changes_and_a_longer_step_schedule_resume_and_train_on(trained, tmp_path, mock_cifar):
  workdir = str(tmp_path / 'run')
  shutil.copytree(trained, workdir)
  changed = tiny_cifar(num_train_steps=4, log_every_steps=1, eval_every_steps=4, checkpoint_every_steps=4,
                       keep_checkpoints=2, eval_batch_size=8, data_dir=str(tmp_path / 'elsewhere'))
  started = time.perf_counter()
  train.train_and_evaluate(changed, workdir)
  took = time.perf_counter() - started
  results = json.load(open(os.path.join(workdir, 'results.json')))
  assert results['steps'] == 4 and results['config']['eval_batch_size'] == 8
  assert [s['start_step'] for s in results['sessions']] == [0, 2]
  # Each session keeps its own time breakdown; this one covers the time since it resumed.
  first, resumed = (session['time'] for session in results['sessions'])
  assert first['time_breakdown'] != resumed['time_breakdown'] == results['time_breakdown']
  assert resumed['wall_s'] <= took and sum(first['time_breakdown'].values()) == pytest.approx(1.0, abs=0.01)
  # 'best' is per metric the best evaluation of either session (step 2's, step 4's), as metrics.jsonl logged them.
  evaluations = [r for r in metrics_log.read(os.path.join(workdir, 'metrics.jsonl')) if 'eval/test/loss' in r]
  assert [r['step'] for r in evaluations] == [2, 4]
  assert results['best'] == {'eval/test/loss': min(r['eval/test/loss'] for r in evaluations),
                             **{f'eval/test/{k}': max(r[f'eval/test/{k}'] for r in evaluations) for k in ('top1', 'top5')}}
  assert sorted(os.listdir(os.path.join(workdir, 'checkpoints'))) == ['2', '4']
  with open(os.path.join(workdir, 'config.json')) as f:
    assert json.load(f)['log_every_steps'] == 1


def test_a_run_shorter_than_its_checkpoint_is_refused(trained, mock_cifar):
  before = snapshot(trained)
  with pytest.raises(UserError, match='num_train_steps: checkpoint 2, this run 1\n  the checkpoint is at step 2, '
                                      'past the 1 steps of this run'):
    train.train_and_evaluate(tiny_cifar(num_train_steps=1, checkpoint_every_steps=1), trained)
  assert snapshot(trained) == before


def schedule_config(schedule, **fields):
  config = config_defaults.super_resolution(4) if schedule == 'cosine_restarts' else config_defaults.classification()
  config.update(dict(schedule=schedule, **fields))
  return config


@pytest.mark.parametrize('schedule, fields, before, after', [
    ('step', {'warmup_epochs': 2.0}, {'num_epochs': 164.0}, {'num_epochs': 200.0}),
    ('constant', {}, {'num_train_steps': 500}, {'num_train_steps': 900}),
    ('cosine_restarts', {'lr_restart_periods': (300, 300)}, {'num_train_steps': 300}, {'num_train_steps': 600}),
])
def test_longer_runs_are_allowed_where_the_rate_of_the_steps_taken_is_unchanged(schedule, fields, before, after):
  recorded = run_identity.to_record(schedule_config(schedule, **fields, **before))
  run_identity.check_length(recorded, schedule_config(schedule, **fields, **after), 250, 10, 'W')


def test_a_longer_cosine_run_is_refused():
  recorded = run_identity.to_record(schedule_config('cosine', num_train_steps=500))
  with pytest.raises(UserError, match=r"(?s)num_train_steps: checkpoint 500, this run 900\n.*900 steps instead of "
                                      r"500 change the cosine schedule's learning rate of steps already taken \(step 1:"):
    run_identity.check_length(recorded, schedule_config('cosine', num_train_steps=900), 250, 10, 'W')


def test_every_declared_field_exists_and_is_documented():
  fields = set(run_identity.flatten(config_defaults.classification().to_dict()))
  fields |= set(run_identity.flatten(config_defaults.super_resolution(4).to_dict()))
  assert set(run_identity.MAY_CHANGE_ON_RESUME) <= fields
  assert set(run_identity.LENGTH_FIELDS) <= fields
  docs = open(os.path.join(REPO, 'docs', 'runs.md')).read()
  table = docs.split('### What may change when a run resumes')[1].split('###')[0]
  rows = [line.split('|')[1] for line in table.splitlines() if line.startswith('| `')]
  assert {name for row in rows for name in re.findall(r'`([\w.]+)`', row)} == set(run_identity.MAY_CHANGE_ON_RESUME)


# The config of a DIV2K x4 run recorded while every config carried SGD's and the step schedule's fields
# (momentum, nesterov, lr_decay_factor), which its Adam and cosine_restarts never read.
OLD_SHAPE_SR_RECORD = json.loads("""{
  "adam_b1": 0.9, "adam_b2": 0.99, "base_learning_rate": 0.0002, "batch_size": 16, "cache_train": false,
  "checkpoint_every_epochs": 0.0, "checkpoint_every_steps": 5000, "compare_attentions": "", "data_dir": null,
  "dataset": "div2k", "ema_decay": 0.999, "eval_every_epochs": 0.0, "eval_every_steps": 5000, "eval_folders": "",
  "eval_max_images": -1, "eval_num_samples": 3, "eval_split": "validation", "eval_tile": 160,
  "eval_tile_overlap": 40, "hr_patch_size": 128, "init_from": "", "keep_checkpoints": 3, "log_every_steps": 100,
  "lr_boundaries_epochs": [], "lr_decay_factor": 0.1, "lr_min": 1e-07, "lr_reference_batch_size": 16,
  "lr_restart_periods": [250000, 250000, 250000, 250000],
  "model": {"attention": "none", "attention_impl": "fast", "attention_options": "", "conv_impl": "auto",
            "dtype": "float32", "name": "msrresnet", "num_block": 16, "num_feat": 64},
  "momentum": 0.9, "nesterov": false, "num_epochs": 0.0, "num_train_steps": 1000000, "optimizer": "adam",
  "patches_per_image": 100, "scale": 4, "schedule": "cosine_restarts", "seed": 0, "shuffle_buffer_size": 2000,
  "synthetic": {"eval_images": 3, "train_images": 800}, "task": "super_resolution", "train_split": "train",
  "warmup_epochs": 0.0, "weight_decay": 0.0, "weight_decay_on": "all"}""")


def test_a_record_carrying_fields_its_recipe_never_read_resumes_with_todays_config():
  assert 'momentum' not in config_defaults.super_resolution(4)  # The config of today, without them.
  run_identity.check_config(OLD_SHAPE_SR_RECORD, config_defaults.super_resolution(4), 'W')


@pytest.mark.parametrize('change, line', [
    ({'adam_b2': 0.999}, 'adam_b2: checkpoint 0.99, this run 0.999'),
    ({'lr_min': 0.0}, 'lr_min: checkpoint 1e-07, this run 0.0'),
    ({'optimizer': 'sgd'}, "optimizer: checkpoint 'sgd', this run 'adam'"),
])
def test_a_record_of_the_old_shape_is_still_refused_for_a_changed_field(change, line):
  recorded = dict(OLD_SHAPE_SR_RECORD, **{k: v for k, v in change.items() if k == 'optimizer'})
  config = config_defaults.super_resolution(4)
  config.update({k: v for k, v in change.items() if k != 'optimizer'})
  with pytest.raises(UserError, match=re.escape(line)) as refused:
    run_identity.check_config(recorded, config, 'W')
  if 'optimizer' in change:  # An SGD run read its momentum: the field is named too, not dropped.
    assert 'momentum: checkpoint 0.9, this run (absent)' in str(refused.value)


def test_a_checkpoint_without_a_recorded_config_is_judged_by_config_json(tmp_path):
  config = tiny_cifar()
  with open(tmp_path / 'config.json', 'w') as f:
    json.dump(dict(run_identity.to_record(config), provenance={'commit': 'x'}), f)
  assert run_identity.recorded_config({'step': 3}, str(tmp_path)) == run_identity.to_record(config)
  with pytest.raises(UserError, match='records no config'):
    run_identity.recorded_config({'step': 3}, str(tmp_path / 'elsewhere'))


def test_results_and_config_say_what_produced_them(trained):
  results = json.load(open(os.path.join(trained, 'results.json')))
  record = results['provenance']
  assert dict(record, time=results['sessions'][-1]['time']) == results['sessions'][-1] and record['start_step'] == 0
  assert json.load(open(os.path.join(trained, 'config.json')))['provenance'] == record
  head = subprocess.run(['git', 'rev-parse', 'HEAD'], cwd=REPO, capture_output=True, text=True)
  status = subprocess.run(['git', 'status', '--porcelain'], cwd=REPO, capture_output=True, text=True)
  if head.returncode == 0:
    assert record['commit'] == head.stdout.strip() and record['dirty'] == bool(status.stdout.strip())
  else:
    assert record['commit'] is None
  import flax
  import jaxlib
  assert (record['jax'], record['jaxlib'], record['flax']) == (jax.__version__, jaxlib.__version__, flax.__version__)
  assert record['version'] == '0.1.0' and record['package'] == 'pfca-jax'
  assert (record['backend'], record['device_kind'], record['device_count'], record['process_count']) == \
      ('cpu', jax.devices()[0].device_kind, 8, 1)
  assert record['command']
  assert ml_collections.ConfigDict(results['config']).model.attention == 'pfca'
