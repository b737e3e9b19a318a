"""docs/attention.md's guide to adding an attention, followed as written on a copy of the package."""

import json
import os
import re
import shutil
import subprocess
import sys

import pytest

from conftest import REPO

GUIDE = os.path.join(REPO, 'docs', 'attention.md')


def _guide_blocks():
  text = open(GUIDE).read()
  return re.findall(r'```python\n(.*?)```', text, flags=re.S), re.findall(r'```bash\n(.*?)```', text, flags=re.S)


def _follow_guide(root):
  """Steps 1-3 of the guide in the copy at `root`: the module file, the registry entry, the test file."""
  (module, import_line, entry, test), _ = _guide_blocks()
  for block in (module, test):
    path = block.splitlines()[0].removeprefix('# ')
    with open(os.path.join(root, path), 'w') as f:
      f.write(block)
  path = os.path.join(root, 'pfca_jax', 'models', 'attention.py')
  source = open(path).read()
  anchor = 'import jax.numpy as jnp\n'
  assert source.count(anchor) == 1 and source.count("    'simam': SimAM,\n}") == 1
  source = source.replace(anchor, anchor + '\n' + import_line)
  source = source.replace("    'simam': SimAM,\n}", "    'simam': SimAM,\n" + entry + '}')
  with open(path, 'w') as f:
    f.write(source)


@pytest.mark.slow  # Trains the quick start with the new attention, through the command.
def test_guide_steps_give_a_tested_attention_that_trains_through_the_quick_start(tmp_path):
  root = tmp_path / 'checkout'
  ignore = shutil.ignore_patterns('__pycache__')
  for folder in ('pfca_jax', 'configs'):
    shutil.copytree(os.path.join(REPO, folder), root / folder, ignore=ignore)
  (root / 'tests').mkdir()
  _follow_guide(root)
  env = {**os.environ, 'PYTHONPATH': str(root)}  # The copy, not the installed package.

  # The guide's test file, its functions called as pytest would (without a nested pytest's start-up).
  calls = 'import test_zgate as t; t.test_zgate_matches_numpy(); t.test_zgate_trains_in_a_resnet(); print("ok")'
  tested = subprocess.run([sys.executable, '-c', calls], cwd=root / 'tests', env=env, capture_output=True, text=True,
                          timeout=600)
  assert tested.returncode == 0 and tested.stdout.strip() == 'ok', tested.stderr[-3000:]

  _, (command,) = _guide_blocks()
  argv = command.split()
  assert argv[:3] == ['python', '-m', 'pfca_jax.main'] and '--config.model.attention=zgate' in argv
  workdir = tmp_path / 'runs'
  # Shrunk to a few steps, and to the new attention's run alone (the baseline's is the quick start's own).
  argv = [sys.executable, *argv[1:]] + [f'--workdir={workdir}', f'--config.data_dir={tmp_path / "tfds"}',
                                        '--config.compare_attentions=zgate', '--config.num_train_steps=4',
                                        '--config.log_every_steps=2', '--config.eval_every_steps=4',
                                        '--config.checkpoint_every_steps=4']
  trained = subprocess.run(argv, cwd=root, env=env, capture_output=True, text=True, timeout=900)
  assert trained.returncode == 0, trained.stderr[-3000:]
  with open(workdir / 'zgate' / 'results.json') as f:
    results = json.load(f)
  assert results['steps'] == 4 and results['final']['eval/test/examples'] == 360
  assert results['params'] == 272_474  # Parameter-free, as the guide says.
  assert '| zgate ' in trained.stdout
