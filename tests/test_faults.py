"""Faults a long run meets, each injected for real: damaged checkpoints, a state that overflows, a disk that
fills during a save, a stop request during a classification or super-resolution evaluation. Nothing trained
is lost, and each ends in one line.

Data comes from the project's fake TFDS writer rather than tfds.testing.mock_data, whose global patch of
epath would redirect the rename that ends an asynchronous save: these tests save asynchronously, as
the trainer does.
"""

import glob
import json
import os
import shutil
import signal
import subprocess
import sys

import jax
import numpy as np
import pytest
import skimage.data
import tiny_sr
from conftest import REPO, checkpointed_state, load_repo_module

from pfca_jax import train
from pfca_jax.data import classification as data
from pfca_jax.data import fake_data
from pfca_jax.data import super_resolution as sr_data
from pfca_jax.imresize import imresize
from pfca_jax.train import checkpointing, reporting, run_identity, steps
from pfca_jax.train.validation import UserError

# Fault trials: each trains a run, damages, overflows, fills the disk under or stops it, and trains again.
pytestmark = pytest.mark.slow


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
  path = str(tmp_path_factory.mktemp('tfds'))
  fake_data.write_fake_dataset('cifar100', path, {'train': fake_data.fake_examples('cifar100', 64, seed=0),
                                                  'test': fake_data.fake_examples('cifar100', 40, seed=1)})
  return path


def tiny(data_dir, **overrides):
  config = load_repo_module('configs/cifar100_resnet20.py').get_config('pfca')
  settings = dict(data_dir=data_dir, batch_size=16, eval_batch_size=8, num_train_steps=4, log_every_steps=1,
                  eval_every_steps=4, checkpoint_every_steps=2, shuffle_buffer_size=64)
  config.update(dict(settings, **overrides))
  config.lock()
  return config


def assert_same_state(a, b):
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
    np.testing.assert_array_equal(x, y)


@pytest.fixture(scope='module')
def straight(data_dir, tmp_path_factory):
  """An uninterrupted 4-step run, checkpoints at steps 2 and 4."""
  workdir = str(tmp_path_factory.mktemp('straight') / 'run')
  train.train_and_evaluate(tiny(data_dir), workdir)
  return workdir


def damage(workdir, step, pattern):
  """Truncates to half their size the files of checkpoint `step` that match `pattern`."""
  files = glob.glob(os.path.join(workdir, 'checkpoints', str(step), pattern))
  assert files, pattern
  for path in files:
    with open(path, 'r+b') as f:
      f.truncate(os.path.getsize(path) // 2)


def test_a_damaged_newest_checkpoint_is_set_aside_and_the_run_resumes_exactly(straight, data_dir, tmp_path, capsys):
  workdir = str(tmp_path / 'run')
  shutil.copytree(straight, workdir)
  damage(workdir, 4, 'state/ocdbt.process_0/d/*')  # The arrays: found only when the state is restored.
  capsys.readouterr()
  train.train_and_evaluate(tiny(data_dir), workdir)
  out = capsys.readouterr().out
  moved = os.path.join(workdir, 'damaged_checkpoints', '4')
  assert f'warning: the checkpoint of step 4 cannot be read (' in out and f'moved to {moved}' in out
  assert 'training resumes from the checkpoint of step 2' in out and 'resuming at step 2' in out
  assert os.path.isdir(moved)  # Kept, for whoever wants to look at it.
  assert sorted(os.listdir(os.path.join(workdir, 'checkpoints'))) == ['2', '4']
  assert_same_state(checkpointed_state(straight, 4), checkpointed_state(workdir, 4))


def test_a_damaged_meta_record_is_passed_over_by_the_resume_check(straight, data_dir, tmp_path):
  workdir = str(tmp_path / 'run')
  shutil.copytree(straight, workdir)
  damage(workdir, 4, 'meta/metadata')  # The JSON record the resume check reads before anything else.
  (step, meta), recorded = run_identity.check_against_checkpoint(tiny(data_dir), workdir)
  assert step == 2 and meta['step'] == 2 and recorded['model']['attention'] == 'pfca'
  assert checkpointing.read_latest_meta(workdir)[0] == 2


def test_a_workdir_whose_checkpoints_are_all_damaged_never_starts_afresh(straight, data_dir, tmp_path):
  workdir = str(tmp_path / 'run')
  shutil.copytree(straight, workdir)
  damage(workdir, 4, 'state/ocdbt.process_0/d/*')
  damage(workdir, 2, 'meta/metadata')
  for _ in range(2):  # Refused again, unchanged, however often it is rerun.
    with pytest.raises(UserError, match=r'no checkpoint in .*/checkpoints can be read \(step 4: .*; step 2: .*\); '
                                        r'to start this run afresh, move that folder away or give a new --workdir'):
      train.train_and_evaluate(tiny(data_dir), workdir)
    assert sorted(os.listdir(os.path.join(workdir, 'checkpoints'))) == ['2', '4']
  assert not os.path.exists(os.path.join(workdir, 'damaged_checkpoints'))


def test_an_update_that_overflows_the_state_is_never_saved(data_dir, tmp_path, monkeypatch):
  # Step 3's update turns one kernel to NaN; that step's loss and gradient norm, computed before the
  # update, are finite, so only the check of the state itself can catch it.
  make = steps.make_train_step

  def overflowing(*args, **kwargs):
    step = make(*args, **kwargs)

    def wrapped(state, batch):
      new_state, metrics = step(state, batch)
      if int(new_state.step) == 3:
        params = jax.tree_util.tree_map_with_path(
            lambda path, x: x * np.nan if jax.tree_util.keystr(path) == "['layer2']['0']['conv1']['kernel']"
            else x, new_state.params)
        new_state = new_state.replace(params=params)
      return new_state, metrics
    return wrapped

  monkeypatch.setattr(steps, 'make_train_step', overflowing)
  workdir = str(tmp_path / 'run')
  with pytest.raises(reporting.TrainingDiverged,
                     match=r'^params/layer2/0/conv1/kernel is not finite after step 3: training stopped; '
                           r'the last good checkpoint is step 2 in .*/checkpoints$') as diverged:
    train.train_and_evaluate(tiny(data_dir, checkpoint_every_steps=1), workdir)
  assert diverged.value.exit_status == 3
  assert sorted(os.listdir(os.path.join(workdir, 'checkpoints'))) == ['1', '2']
  results = json.load(open(os.path.join(workdir, 'results.json')))
  assert results['status'] == 'diverged' and results['step'] == 3 and results['last_good_checkpoint'] == 2
  assert sum(results['time_breakdown'].values()) == pytest.approx(1.0, abs=0.01)  # Up to the divergence.
  assert all(np.isfinite(x).all() for x in jax.tree.leaves(checkpointed_state(workdir)))


# Runs the command line with the file-size limit lowered just before the second checkpoint save: its
# asynchronous write then fails with EFBIG inside orbax, as a full disk fails with ENOSPC.
_DISK_FULL = '''
import resource, runpy, signal, sys
from pfca_jax.train import checkpointing
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # Over the limit, write() fails instead of the process dying.
save, calls = checkpointing.Checkpoints.save, []
def save_with_a_full_disk(self, *args, **kwargs):
  calls.append(None)
  if len(calls) == 2:
    resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, resource.RLIM_INFINITY))
  return save(self, *args, **kwargs)
checkpointing.Checkpoints.save = save_with_a_full_disk
sys.argv[0] = 'pfca_jax.main'
runpy.run_module('pfca_jax.main', run_name='__main__', alter_sys=True)
'''


def test_a_save_that_fails_ends_in_one_line_with_the_older_checkpoints_and_logs_intact(data_dir, tmp_path):
  workdir = str(tmp_path / 'run')
  env = dict(os.environ, PFCA_JAX_CPU_SETTINGS='0')  # No re-execution that would drop the injected fault.
  result = subprocess.run(
      [sys.executable, '-c', _DISK_FULL, '--config=configs/cifar100_resnet20.py:pfca', f'--workdir={workdir}',
       f'--config.data_dir={data_dir}', '--config.batch_size=16', '--config.eval_batch_size=8',
       '--config.num_train_steps=4', '--config.log_every_steps=1', '--config.eval_every_steps=4',
       '--config.checkpoint_every_steps=2', '--config.shuffle_buffer_size=64'],
      cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
  assert result.returncode == 4, result.stderr[-3000:]
  assert 'Traceback' not in result.stderr, result.stderr[-3000:]
  checkpoints = os.path.join(workdir, 'checkpoints')
  assert result.stderr.strip().splitlines()[-1] == (
      f'error: saving the checkpoint of step 4 in {checkpoints} failed: File too large (errno 27); the older '
      'checkpoints are intact, the latest is step 2; make room or fix the folder and rerun the same command to '
      'resume')
  assert checkpointed_state(workdir, 2) is not None  # The older checkpoint restores.
  logged = [json.loads(line)['step'] for line in open(os.path.join(workdir, 'metrics.jsonl'))]
  assert logged[-2:] == [4, 4]  # The last train line and the evaluation, both written before the save.
  events = glob.glob(os.path.join(workdir, 'events.out.tfevents.*'))
  assert events and os.path.getsize(events[0]) > 0  # Flushed although the save failed.
  # The interrupted save's temporary folder goes when the trainer next opens the workdir.
  assert glob.glob(os.path.join(checkpoints, '*orbax-checkpoint-tmp*'))
  checkpointing.Checkpoints(workdir, 3).close()
  assert os.listdir(checkpoints) == ['2']


@pytest.fixture(scope='module')
def div2k_dir(tmp_path_factory):
  """tiny_sr's fake DIV2K x2 with three validation images instead of one: a stop after the first leaves two."""
  path = str(tmp_path_factory.mktemp('div2k'))
  photo = skimage.data.coffee()
  crops = [np.ascontiguousarray(photo[y:y + 32, x:x + 40]) for y, x in ((100, 200), (150, 60), (220, 300))]
  pairs = [(imresize(hr, 0.5), hr) for hr in crops]
  fake_data.write_fake_div2k(path, 2, {'train': pairs * 3, 'validation': pairs}, num_shards=1)
  return path


def signalled_at_second(items, served: list, first_run: list):
  """The items, SIGTERM sent to this process before the second is handed out, in the first evaluation only."""
  for i, item in enumerate(items):
    if i == 1 and first_run[0]:  # The preemption notice arrives during the first evaluation.
      first_run[0] = False
      os.kill(os.getpid(), signal.SIGTERM)
    served.append(i)
    yield item


# Classification checks for a stop between batches, super-resolution between images (docs/training.md).
@pytest.mark.parametrize('task', ['classification', 'super_resolution'])
def test_sigterm_during_evaluation_stops_it_and_the_resumed_run_evaluates_that_step_first(task, request, tmp_path,
                                                                                         monkeypatch):
  served, first_run = [], [True]
  intervals = dict(num_train_steps=6, eval_every_steps=2, checkpoint_every_steps=6)
  if task == 'classification':
    original = data.eval_iterator

    def batches(config, info):
      items, num_steps = original(config, info)
      return signalled_at_second(items, served, first_run), num_steps
    monkeypatch.setattr(data, 'eval_iterator', batches)
    config, counted, items = tiny(request.getfixturevalue('data_dir'), **intervals), 'eval/test/examples', 5
    size = 40  # Examples: 5 batches of 8.
  else:
    original = sr_data.eval_images
    monkeypatch.setattr(sr_data, 'eval_images',
                        lambda *args, **kwargs: signalled_at_second(original(*args, **kwargs), served, first_run))
    config, counted, items = tiny_sr.config(request.getfixturevalue('div2k_dir'), **intervals), 'eval/div2k/images', 3
    size = items
  workdir = str(tmp_path / 'run')
  with pytest.raises(checkpointing.TrainingStopped,
                     match=r'SIGTERM: checkpoint of step 2 saved .* \(the evaluation it interrupted runs first\)'):
    train.train_and_evaluate(config, workdir)
  assert len(served) < items  # The rest were never evaluated.
  assert os.listdir(os.path.join(workdir, 'checkpoints')) == ['2']
  served.clear()
  train.train_and_evaluate(config, workdir)
  evals = [json.loads(line) for line in open(os.path.join(workdir, 'metrics.jsonl'))]
  evals = [(r['step'], r[counted]) for r in evals if counted in r]
  assert evals == [(2, size), (4, size), (6, size)]
