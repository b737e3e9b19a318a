"""experiments/ablation.py: the grid runs, resumes, and aggregates mean ± std over seeds correctly."""

import csv
import json
import math
import os
import signal
import subprocess
import sys

import pytest
from conftest import load_repo_module

from pfca_jax.data import classification as data
from pfca_jax.studies import ablation, compare
from pfca_jax.train.checkpointing import TrainingStopped

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOP1 = 'eval/test/top1'


def synthetic_run(attention, seed, top1, rate, params=1000, flops=2e9):
  return {'attention': attention, 'seed': seed, 'final': {TOP1: top1, 'eval/test/loss': 0.5}, 'params': params,
          'cost': {'flops': flops, 'input': '16x16'}, 'train_images_per_sec': rate, 'wall_time_s': 61.0,
          'workdir': f'/nowhere/{attention}/seed_{seed}', 'steps': 10}


def test_aggregate_gives_means_sample_stds_and_differences_to_none(tmp_path):
  runs = [synthetic_run('none', 0, 0.90, 100.0), synthetic_run('none', 1, 0.92, 110.0),
          synthetic_run('pfca', 0, 0.93, 95.0, flops=2.01e9), synthetic_run('pfca', 1, 0.97, 99.0, flops=2.01e9)]
  metrics, rows = ablation.aggregate(runs)
  assert metrics == [TOP1]
  assert [r['attention'] for r in rows] == ['none', 'pfca'] and rows[1]['seeds'] == [0, 1]
  text = ablation.format_markdown(metrics, rows)
  summary = text.split('Per run:')[0]
  none_row = next(line for line in summary.splitlines() if line.startswith('| none '))
  pfca_row = next(line for line in summary.splitlines() if line.startswith('| pfca '))
  # none: 91.00 ± 1.41 (sample std of 90, 92); pfca: 95.00 ± 2.83; difference 4.00 ± sqrt(2/2 + 8/2).
  assert '91.00 ± 1.41' in none_row and '95.00 ± 2.83' in pfca_row
  assert f'+4.00 ± {math.sqrt(1.0 + 4.0):.2f}' in pfca_row
  assert '105.0 ± 7.1' in none_row and '-7.6%' in pfca_row  # 97 / 105 - 1.
  assert '+0.50%' in pfca_row and '+0 ' in pfca_row  # GFLOPs and params vs none.
  assert text.count('| pfca ') == 3  # One summary row and one row per seed.
  path = str(tmp_path / 'grid.csv')
  ablation.write_csv(path, metrics, rows)
  with open(path) as f:
    table = list(csv.DictReader(f))
  assert float(table[1][f'{TOP1}_mean']) == pytest.approx(0.95)
  assert float(table[1][f'{TOP1}_std']) == pytest.approx(math.sqrt(0.0008), rel=1e-6)
  assert table[0][f'{TOP1}_values'] == '0.9 0.92'


def test_one_seed_has_no_spread_and_attentions_are_validated():
  _, rows = ablation.aggregate([synthetic_run('none', 0, 0.5, 10.0), synthetic_run('se', 0, 0.6, 9.0)])
  text = ablation.format_markdown([TOP1], rows)
  assert '| 50.00 ' in text and '+10.00 ' in text and '±' not in text.split('Per run:')[0]
  with pytest.raises(ablation.UserError, match=": cbam is not valid; give a comma-separated list of none, pfca"):
    compare.parse_attentions('pfca,cbam', '--attentions')


def run_cli(*args, timeout=600):
  return subprocess.run([sys.executable, 'experiments/ablation.py', *args], cwd=REPO, capture_output=True,
                        text=True, timeout=timeout)


# Its mistakes are refused through the command in test_bad_inputs.py's table (the ablation_* cases).


@pytest.mark.slow
def test_digits_grid_resumes_when_interrupted_rereads_when_done_and_refuses_a_changed_config(tmp_path, monkeypatch):
  """Two attentions x two seeds of the shrunk digits quick start: stopped by SIGTERM in its second run, then the
  same command (which resumes that run and trains the rest), the same again, and one with another config."""
  args = ['--config=configs/quickstart.py', '--seeds=2', '--attentions=none,pfca', f'--workdir={tmp_path}/runs',
          f'--results_dir={tmp_path}/results', f'--config.data_dir={tmp_path}/tfds', '--config.num_train_steps=3',
          '--config.log_every_steps=1', '--config.eval_every_steps=3', '--config.checkpoint_every_steps=3']
  config = load_repo_module('configs/quickstart.py').get_config()
  config.update(dict(data_dir=f'{tmp_path}/tfds', num_train_steps=3, log_every_steps=1, eval_every_steps=3,
                     checkpoint_every_steps=3))
  original, started = data.train_iterator, []

  def stopped_in_the_second_run(config, info, start_step=0):
    started.append(config.model.attention)
    for i, batch in enumerate(original(config, info, start_step=start_step)):
      if len(started) == 2 and i == 1:  # SIGTERM while its second batch is prepared (by the prefetcher).
        os.kill(os.getpid(), signal.SIGTERM)
      yield batch

  monkeypatch.setattr(data, 'train_iterator', stopped_in_the_second_run)
  with pytest.raises(TrainingStopped, match='checkpoint of step [12] saved'):
    ablation.run_grid(config, f'{tmp_path}/runs', ['none', 'pfca'], 2)
  saved = os.listdir(tmp_path / 'runs' / 'pfca' / 'seed_0' / 'checkpoints')
  assert started == ['none', 'pfca'] and saved in (['1'], ['2'])

  done = run_cli(*args)
  assert done.returncode == 0, done.stderr[-3000:]
  assert [line.rsplit(' (', 1)[1] for line in done.stdout.splitlines() if line.startswith('== run')] == \
      ['finished, re-read)', 'resuming)', 'training)', 'training)']
  assert f'resuming at step {saved[0]}' in done.stdout
  finals = {}
  for attention in ('none', 'pfca'):
    for seed in (0, 1):
      with open(tmp_path / 'runs' / attention / f'seed_{seed}' / 'results.json') as f:
        results = json.load(f)
      assert results['config']['seed'] == seed and results['config']['model']['attention'] == attention
      assert results['steps'] == 3
      finals[attention, seed] = results['final']
  assert finals['none', 0]['eval/test/loss'] != finals['none', 1]['eval/test/loss']  # The seeds differ.
  text = open(tmp_path / 'results' / 'quickstart.md').read()
  assert text.startswith('# Ablation: quickstart') and 'experiments/ablation.py --config=configs/quickstart.py' in text
  for (attention, seed), final in finals.items():
    assert f'| {attention} ' in text and f'{100 * final[TOP1]:.2f}' in text
  assert 'Produced by pfca-jax 0.1.0' in text  # Runs trained in-process and by the command: one line each.
  assert os.path.getsize(tmp_path / 'results' / 'quickstart.png') > 0
  assert os.path.getsize(tmp_path / 'results' / 'quickstart.csv') > 0

  again = run_cli(*args)
  assert again.returncode == 0, again.stderr[-3000:]
  assert again.stdout.count('(finished, re-read)') == 4 and '(training)' not in again.stdout
  assert open(tmp_path / 'results' / 'quickstart.md').read().split('Per run:')[1] == text.split('Per run:')[1]

  refused = run_cli(*args, '--config.weight_decay=0.001')
  assert refused.returncode == 2 and '== run' not in refused.stdout
  assert f'error: the run in {tmp_path}/runs/none/seed_0 was trained with another config' in refused.stderr
  assert '  weight_decay: checkpoint 0.0005, this run 0.001' in refused.stderr.splitlines()
