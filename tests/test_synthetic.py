"""Synthetic data, and the trainer without TensorFlow.

The trainer test runs in a subprocess where `tensorflow` and `tensorflow_datasets` cannot be imported (a
finder that fails their import, as on a machine without them): classification and super-resolution
train on synthetic data, evaluate, checkpoint, resume exactly and write their logs, and a TFDS dataset
fails in one line with the install command.
"""

import json
import subprocess
import sys

import ml_collections
import numpy as np
import pytest

from conftest import REPO
from pfca_jax.data import synthetic_classification as syn_cls
from pfca_jax.data import synthetic_super_resolution as syn_sr
from pfca_jax.errors import UserError
from pfca_jax.train import config_defaults, run_identity

WITHOUT_TENSORFLOW = '''
import importlib.abc, importlib.machinery, sys

class Unimportable(importlib.abc.MetaPathFinder, importlib.abc.Loader):
  """`import tensorflow` (or tensorflow_datasets) raises ModuleNotFoundError, as where they are not installed."""
  def find_spec(self, name, path=None, target=None):
    if name.split('.')[0] in ('tensorflow', 'tensorflow_datasets'):
      return importlib.machinery.ModuleSpec(name, self)
  def create_module(self, spec):
    raise ModuleNotFoundError(f'No module named {spec.name!r}', name=spec.name)
  def exec_module(self, module):
    pass

sys.meta_path.insert(0, Unimportable())
'''

TRAIN_AND_RESUME = WITHOUT_TENSORFLOW + '''
import contextlib, io, json, os, shutil
import jax, numpy as np
from pfca_jax import data, train
from pfca_jax.errors import UserError
from pfca_jax.train import checkpointing, config_defaults

def state(workdir):
  with checkpointing.reading(workdir) as (manager, latest):
    return latest, jax.device_get(checkpointing.restore(manager, latest)[0])  # Parameters, optimiser state, BN.

def train_and_resume(config, workdir):
  """4 steps; then a copy of the run without its last checkpoint resumed from step 2."""
  console = io.StringIO()
  with contextlib.redirect_stdout(console):
    train.train_and_evaluate(config, workdir)
  shutil.copytree(workdir, workdir + '_resumed')
  shutil.rmtree(os.path.join(workdir + '_resumed', 'checkpoints', '4'))
  train.train_and_evaluate(config, workdir + '_resumed')
  (step, params), (resumed_step, resumed) = state(workdir), state(workdir + '_resumed')
  equal = all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(resumed), strict=True))
  return {'steps': [step, resumed_step], 'resumed_equal': equal, 'console': console.getvalue(),
          'files': sorted(os.listdir(workdir))}

root = sys.argv[1]
cls = config_defaults.classification()
cls.update(dict(dataset='synthetic', batch_size=16, eval_batch_size=16, num_train_steps=4, log_every_steps=2,
                eval_every_steps=2, checkpoint_every_steps=2))
cls.model.attention = 'pfca'
cls.synthetic.update(dict(num_classes=10, train_examples=64, eval_examples=20))
sr = config_defaults.super_resolution(4)
sr.update(dict(dataset='synthetic', batch_size=8, hr_patch_size=32, num_train_steps=4, log_every_steps=2,
               eval_every_steps=2, checkpoint_every_steps=2, eval_tile=24, eval_tile_overlap=8))
sr.model.update(dict(attention='pfca', num_feat=8, num_block=1))
sr.synthetic.eval_images = 2
report = {'classification': train_and_resume(cls, os.path.join(root, 'cls')),
          'super_resolution': train_and_resume(sr, os.path.join(root, 'sr'))}
cls.dataset = 'cifar100'
try:
  data.pipeline(cls)
except UserError as e:
  report['tfds_error'] = str(e)
report['imported'] = sorted({name.split('.')[0] for name in sys.modules} & {'tensorflow', 'tensorflow_datasets'})
print('REPORT ' + json.dumps(report))
'''


@pytest.mark.slow
def test_trainer_runs_and_resumes_on_synthetic_data_without_tensorflow(tmp_path):
  result = subprocess.run([sys.executable, '-c', TRAIN_AND_RESUME, str(tmp_path)], cwd=REPO, capture_output=True,
                          text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  report = json.loads(result.stdout.split('REPORT ', 1)[1])
  for task, folder in (('classification', 'cls'), ('super_resolution', 'sr')):
    run = report[task]
    assert run['steps'] == [4, 4] and run['resumed_equal'], task
    assert 'data: synthetic' in run['console'] and 'not for results' in run['console']
    assert {'config.json', 'metrics.jsonl', 'results.json', 'checkpoints'} <= set(run['files'])
    assert any(name.startswith('events.out.tfevents.') for name in run['files'])
    logged = [json.loads(line) for line in open(tmp_path / folder / 'metrics.jsonl')]
    assert [row['step'] for row in logged if 'train/loss' in row] == [2, 4]
  assert 'eval synthetic at step 4: psnr_y' in report['super_resolution']['console']
  assert 'eval test at step 4: top1' in report['classification']['console']
  assert "No module named 'tensorflow'" in report['tfds_error']
  assert 'pip install tensorflow-cpu==2.21.0 tensorflow-datasets==4.9.10' in report['tfds_error']
  assert report['imported'] == []


def _cls_config(**sizes) -> ml_collections.ConfigDict:
  config = config_defaults.classification()
  config.update(dict(dataset='synthetic', batch_size=8, eval_batch_size=6, image_size=8))
  config.synthetic.update({**dict(num_classes=5, train_examples=40, eval_examples=13), **sizes})
  return config


def test_classification_batches_are_a_function_of_seed_process_and_step():
  config = _cls_config()
  info = syn_cls.dataset_info(config)
  assert info.image_shape == (8, 8, 3) and info.num_classes == 5 and syn_cls.steps_per_epoch(info, config) == 5
  fresh = syn_cls.train_iterator(config, info)
  batches = [next(fresh) for _ in range(7)]
  resumed = syn_cls.train_iterator(config, info, start_step=5)
  for expected in batches[5:]:
    got = next(resumed)
    np.testing.assert_array_equal(got['image'], expected['image'])
    np.testing.assert_array_equal(got['label'], expected['label'])
  assert batches[0]['image'].dtype == np.float32 and batches[0]['label'].dtype == np.int32
  assert batches[0]['image'].shape == (8, 8, 8, 3) and 0 <= batches[0]['label'].min() <= batches[0]['label'].max() < 5
  assert not np.array_equal(batches[0]['image'], batches[1]['image'])
  other_process = next(syn_cls.train_iterator(config, info, process_index=1, process_count=2))
  assert other_process['image'].shape[0] == 4
  assert not np.array_equal(other_process['image'], batches[0]['image'][:4])


def test_classification_evaluation_counts_every_example_once_whatever_the_process_count():
  config = _cls_config()
  info = syn_cls.dataset_info(config)
  for process_count in (1, 2, 3):
    steps, real = set(), 0
    for process_index in range(process_count):
      batches, num_steps = syn_cls.eval_iterator(config, info, process_index=process_index,
                                                 process_count=process_count)
      batches = list(batches)
      assert len(batches) == num_steps
      steps.add(num_steps)
      real += sum(int(batch['mask'].sum()) for batch in batches)
    assert len(steps) == 1 and real == 13, process_count


def test_super_resolution_pairs_and_evaluation_images():
  config = config_defaults.super_resolution(3)
  config.update(dict(dataset='synthetic', batch_size=4, hr_patch_size=24))
  info = syn_sr.dataset_info(config)
  assert (info.lr_patch, info.hr_patch) == (8, 24)
  batch = next(syn_sr.train_iterator(config, info, start_step=6))
  assert batch['lr'].shape == (4, 8, 8, 3) and batch['hr'].shape == (4, 24, 24, 3)
  assert 0.0 <= batch['hr'].min() and batch['hr'].max() <= 1.0
  np.testing.assert_array_equal(batch['hr'], next(syn_sr.train_iterator(config, info, start_step=2))['hr'])
  images = list(syn_sr.eval_images(config))
  assert [image['index'] for image in images] == [0, 1, 2]
  assert [image['hr'].shape for image in images] == [(*size, 3) for size in syn_sr.EVAL_HR_SIZES]
  for image in images:
    assert image['lr'].shape == (image['hr'].shape[0] // 3, image['hr'].shape[1] // 3, 3)
  shared = [image for p in range(2) for image in syn_sr.eval_images(config, process_index=p, process_count=2)]
  for image in shared:
    np.testing.assert_array_equal(image['hr'], images[image['index']]['hr'])
  assert sorted(image['index'] for image in shared) == [0, 1, 2]
  assert [image['index'] for image in syn_sr.eval_images(config, max_images=1)] == [0]


@pytest.mark.parametrize('field, value', [('num_classes', 0), ('train_examples', -1), ('eval_examples', 0)])
def test_bad_synthetic_sizes_fail_in_one_line(field, value):
  with pytest.raises(UserError, match=rf'config\.synthetic\.{field}={value!r} must be a positive integer'):
    syn_cls.dataset_info(_cls_config(**{field: value}))


def test_synthetic_sizes_belong_to_the_run_only_on_synthetic_data():
  recorded = run_identity.to_record(config_defaults.imagenet())
  del recorded['synthetic']  # A run recorded before the field existed.
  assert run_identity.identity_differences(recorded, run_identity.to_record(config_defaults.imagenet())) == []
  synthetic = config_defaults.imagenet()
  synthetic.dataset = 'synthetic'
  changed = config_defaults.imagenet()
  changed.dataset = 'synthetic'
  changed.synthetic.num_classes = 10
  assert [name for name, _, _ in run_identity.identity_differences(
      run_identity.to_record(synthetic), run_identity.to_record(changed))] == ['synthetic.num_classes']
