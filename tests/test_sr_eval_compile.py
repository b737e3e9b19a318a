"""experiments/sr_eval_compile.py: its rows say the Upscaler is the whole-image pass and whole-network tiles are not."""

import json

import pytest
from conftest import load_repo_module

sr_eval_compile = load_repo_module('experiments/sr_eval_compile.py')


def test_rows_for_the_quick_start_model(tmp_path, capsys):
  out = str(tmp_path / 'sr')
  assert sr_eval_compile.main(['--models=quickstart_x2', '--tile=96', '--overlap=16', f'--out={out}']) == 0
  rows = json.load(open(out + '.json'))['rows']
  assert [r['lr'] for r in rows] == ['320x213', '320x240', '256x256']
  for row in rows:
    assert row['compile_s'] > 0 and row['upscaler_s'] > 0 and row['tiled_s'] > 0
    assert row['upscaler_max_diff'] < 1e-5 < row['tiled_max_diff']
    assert row['upscaler_8bit_differ'] < row['tiled_8bit_differ'] <= row['8bit_values']
  text = open(out + '.md').read()
  assert text in capsys.readouterr().out and '| quickstart_x2 + pfca | 256x256 |' in text


@pytest.mark.parametrize('argv,message', [
    (['--models=quickstart_x3'], '--models=quickstart_x3: valid names are basicsr_x4, quickstart_x2'),
    (['--attention=cbam'], '--attention=cbam: valid: none'),
    (['--tile=10', '--overlap=5'], 'overlap=5 must be >= 0 and less than half of tile=10'),
    (['--out=/no/such/folder/sr'], 'folder /no/such/folder is not writable'),
])
def test_mistakes_are_one_line(argv, message, capsys):
  assert sr_eval_compile.main(argv) == 2
  err = capsys.readouterr().err.strip()
  assert err.startswith('error: ') and message in err and len(err.splitlines()) == 1
