"""experiments/pool_bench.py: pooled per-round ratios across runs, and one-line errors for bad files."""

import json

import pytest
from conftest import load_repo_module

pool_bench = load_repo_module('experiments/pool_bench.py')


def write_run(path, rounds):
  rows = [{'benchmark': 'net', 'attention': name, 'framework': 'jax', 'step_s_rounds': times}
          for name, times in rounds.items()]
  rows.append({'benchmark': 'net', 'attention': 'torch', 'framework': 'torch', 'step_s_rounds': [9.0]})
  path.write_text(json.dumps({'rows': rows}))
  return str(path)


def test_rounds_of_all_runs_are_pooled_per_attention(tmp_path, capsys):
  # Ratios to none: run a gives pfca +10%, +20%, +30%, run b +40%, +50%, +60% (median of six: +35%).
  a = write_run(tmp_path / 'a.json', {'none': [1.0, 2.0, 1.0], 'pfca': [1.1, 2.4, 1.3], 'se': [1.0, 2.0, 1.0]})
  b = write_run(tmp_path / 'b.json', {'none': [2.0, 1.0, 1.0], 'pfca': [2.8, 1.5, 1.6], 'se': [2.2, 1.0, 1.0]})
  assert pool_bench.main(['--benchmark=net', a, b]) == 0
  lines = capsys.readouterr().out.splitlines()
  assert lines[0] == 'net + pfca vs none: +35.0% [+10.0, +60.0] over 6 rounds of 2 runs'
  assert lines[1].startswith('net + se vs none: +0.0% [+0.0, +10.0]')
  assert pool_bench.main(['--benchmark=net', '--attentions=pfca', '--against=se', a]) == 0
  assert capsys.readouterr().out.startswith('net + pfca vs se: +20.0% over 3 rounds of 1 runs')
  assert pool_bench.round_ratios(a, pool_bench.load_rows(a), 'net', 'pfca', 'none') == pytest.approx([0.1, 0.2, 0.3])


@pytest.mark.parametrize('content,message', [
    (None, 'missing.json is not a readable pfca_jax.bench JSON (FileNotFoundError'),
    ('not json', 'is not a readable pfca_jax.bench JSON (JSONDecodeError'),
    ('{"rows": [{"benchmark": "net", "attention": "none", "step_s_rounds": [1.0]}]}',
     'has no net + eca; it has: none'),
])
def test_bad_files_are_one_line_errors(tmp_path, content, message):
  path = tmp_path / 'missing.json'
  if content is not None:
    path.write_text(content)
  with pytest.raises(SystemExit) as e:
    pool_bench.main(['--benchmark=net', '--attentions=eca', str(path)])
  assert message in str(e.value) and '\n' not in str(e.value)
