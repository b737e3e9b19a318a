"""The trainer's exit statuses through the command (docs/training.md, "Exit statuses"): 3 when training
diverges, 143 on SIGTERM and 130 on Ctrl-C (SIGINT), each with what the docs promise that stop leaves behind.

The library-level tests (test_faults.py, test_train_classification.py) see the exceptions; these see what a
shell or a scheduler sees: `python -m pfca_jax.main`, its status and its lines. Each run is a fork of one
pre-imported process (fork_server.py), which also sends the signal once the run has printed a step, so
the signal really comes from outside, at a moment the test does not control to the step.
"""

import json
import os
import re
import signal

import pytest
from conftest import REPO, xla_flags
from fork_server import Server

# Whole-command stop and fault trials, as the other stop trials.
pytestmark = pytest.mark.slow

STEPS = 40  # Far more than a run gets through before the signal's stop: the stop is never the end.
# A tiny run: ResNet-20 on synthetic 8x8 images (no files to prepare), one device, every step logged. Checkpoints
# only at the stop (every 1000 steps otherwise) so that the one in the folder is the stop's.
ARGS = ['--config=configs/cifar100_resnet20.py:pfca', '--config.dataset=synthetic', '--config.image_size=8',
        '--config.synthetic.num_classes=10', '--config.synthetic.train_examples=64',
        '--config.synthetic.eval_examples=16', '--config.batch_size=8', '--config.eval_batch_size=8',
        f'--config.num_train_steps={STEPS}', '--config.log_every_steps=1', '--config.eval_every_steps=1000',
        '--config.checkpoint_every_steps=1000']


@pytest.fixture(scope='module')
def server(tmp_path_factory):
  base = str(tmp_path_factory.mktemp('exit_statuses'))
  env = dict(os.environ, PFCA_JAX_CPU_SETTINGS='0',  # Would re-exec the forked server with its own arguments.
             JAX_PLATFORMS='cpu', XLA_FLAGS=xla_flags(1),
             PYTHONPATH=os.pathsep.join(filter(None, [REPO, os.environ.get('PYTHONPATH')])))
  served = Server(env, os.path.join(base, 'server.log'))
  yield served
  served.close()


def train(server, tmp_path, *overrides, signal_after=None):
  """(workdir, status, stdout, stderr) of the command on a new workdir, run in the repository (configs/...)."""
  workdir = str(tmp_path / 'run')
  status, out, err = server.run('pfca_jax.main', [*ARGS, f'--workdir={workdir}', *overrides], REPO,
                                str(tmp_path / 'command'), signal_after=signal_after, timeout=300)
  return workdir, status, out, err


def checkpoint_steps(workdir) -> list[int]:
  return sorted(int(name) for name in os.listdir(os.path.join(workdir, 'checkpoints')))


@pytest.mark.parametrize('signum, status', [(signal.SIGTERM, 143), (signal.SIGINT, 130)], ids=['SIGTERM', 'SIGINT'])
def test_a_signal_checkpoints_the_step_it_stopped_at_and_exits_128_plus_its_number(server, tmp_path, signum, status):
  # Sent once step 2's line is out: the step running then finishes, is checkpointed, and the run exits.
  workdir, code, out, err = train(server, tmp_path, signal_after=(f'step 2/{STEPS} ', signum))
  assert code == status, f'status {code}\n{out[-2000:]}\n{err[-2000:]}'
  checkpoints = os.path.join(workdir, 'checkpoints')
  # The run's last line says which checkpoint it saved and how to resume.
  said = re.fullmatch(rf'{signum.name}: checkpoint of step (\d+) saved in {re.escape(checkpoints)}; '
                      r'rerun the same command to resume', out.strip().splitlines()[-1])
  assert said, out[-2000:]
  stopped = int(said[1])
  # Step 2's line comes after that step's stop check: the stop comes at a later step boundary, long before the end.
  assert 2 < stopped < STEPS
  assert checkpoint_steps(workdir) == [stopped]
  assert json.loads(open(os.path.join(workdir, 'metrics.jsonl')).read().splitlines()[-1])['step'] == stopped
  # An unfinished run: no results.json (written at the end), and no error line: the stop is not a failure.
  assert not os.path.exists(os.path.join(workdir, 'results.json'))
  assert 'error' not in err and 'Traceback' not in err, err[-2000:]


def test_divergence_exits_3_in_one_line_keeping_the_last_good_checkpoint(server, tmp_path):
  # At lr 1e30 step 1's update leaves huge but finite weights (checkpointed, every step here), on which
  # step 2's loss is no longer finite.
  workdir, code, out, err = train(server, tmp_path, '--config.base_learning_rate=1e30',
                                  '--config.checkpoint_every_steps=1')
  assert code == 3, f'status {code}\n{out[-2000:]}\n{err[-2000:]}'
  checkpoints = os.path.join(workdir, 'checkpoints')
  assert re.fullmatch(r'error: loss is (nan|inf) at step 2: training stopped; the last good checkpoint is step 1 in '
                      + re.escape(checkpoints), err.strip()), err[-2000:]  # One line.
  assert checkpoint_steps(workdir) == [1]  # No checkpoint of the diverged state.
  results = json.load(open(os.path.join(workdir, 'results.json')))
  assert (results['status'], results['step'], results['last_good_checkpoint']) == ('diverged', 2, 1)
