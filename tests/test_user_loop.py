"""experiments/user_loop.py, the timed plain loop of docs/models.md: it runs, and refuses bad flags.

The script's `main` runs in this process, through the same `runner.run` its `__main__` calls (exit status,
one-line errors): a fresh interpreter would only add JAX's start-up. `--cpu_settings=off` is the path a
script that skips `cpu_settings.apply()` takes, the one that can run after JAX is imported.
"""

import pytest
from conftest import load_repo_module

from pfca_jax.cli import runner

user_loop = load_repo_module('experiments/user_loop.py')


def test_user_loop_trains_and_reports_a_step_time(capsys):
  args = ['--model=msrresnet_x4', '--batch_size=1', '--steps=2', '--cpu_settings=off', '--attention_impl=reference']
  assert runner.run(user_loop.main, args) == 0
  out, err = capsys.readouterr()
  assert err == '' and out.startswith('msrresnet_x4 + pfca (reference), cpu_settings off, batch 1: median ')
  assert out.rstrip().endswith('2 steps)') and len(out.splitlines()) == 1


@pytest.mark.parametrize('flag, named', [('--model=vgg', "'vgg'"), ('--steps=0', '--steps=0'),
                                         ('--attention_impl=quick', "'quick'"), ('--attention=pcfa', "'pcfa'")])
def test_user_loop_refuses_bad_flags_in_one_line(flag, named, capsys):
  assert runner.run(user_loop.main, [flag, '--cpu_settings=off']) == 2
  out, err = capsys.readouterr()
  assert out == '' and len(err.splitlines()) == 1 and err.startswith('error: ') and named in err, err
