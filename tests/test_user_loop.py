"""experiments/user_loop.py, the timed plain loop of docs/models.md: it runs, and refuses bad flags."""

import subprocess
import sys

import pytest
from conftest import REPO


def _run(*args):
  return subprocess.run([sys.executable, 'experiments/user_loop.py', *args], cwd=REPO, capture_output=True, text=True,
                        timeout=600)


def test_user_loop_trains_and_reports_a_step_time():
  done = _run('--model=msrresnet_x4', '--batch_size=1', '--steps=2', '--cpu_settings=off', '--attention_impl=reference')
  assert done.returncode == 0, done.stderr[-2000:]
  assert done.stdout.startswith('msrresnet_x4 + pfca (reference), cpu_settings off, batch 1: median ')


@pytest.mark.parametrize('flag, named', [('--model=vgg', "'vgg'"), ('--steps=0', '--steps=0'),
                                         ('--attention_impl=quick', "'quick'"), ('--attention=pcfa', "'pcfa'")])
def test_user_loop_refuses_bad_flags(flag, named):
  done = _run(flag, '--cpu_settings=off')
  # One line, naming the value, with nothing after it (JAX may warn on stderr before it).
  lines = done.stderr.strip().splitlines()
  assert done.returncode == 2 and done.stdout == '', done.stderr
  assert [line for line in lines if line.startswith('error:')] == lines[-1:] and named in lines[-1], done.stderr
