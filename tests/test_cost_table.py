"""experiments/cost_table.py: parameters and FLOPs from the summary, measured step times, one-line errors."""

import json

import pytest
from conftest import load_repo_module

from pfca_jax import models
from pfca_jax.models import summary

cost_table = load_repo_module('experiments/cost_table.py')


def test_cost_table_rows_and_growth(tmp_path, capsys):
  out = str(tmp_path / 'cost')
  assert cost_table.main(['--networks=cifar_resnet20', '--attentions=none,se', '--rounds=1', '--batch_size=8',
                          f'--out={out}']) == 0
  rows = json.load(open(out + '.json'))['rows']
  assert [r['attention'] for r in rows] == ['none', 'se'] and all(r['input'] == '32x32' for r in rows)
  for row in rows:
    expected = summary.summarize(models.create('cifar_resnet20', attention=row['attention'], num_classes=100),
                                 (1, 32, 32, 3))
    assert row['params'] == expected['params'] and row['flops'] == pytest.approx(expected['flops'])
    assert row['step_s_min'] <= row['step_s'] <= row['step_s_max'] and row['step_s'] > 0
  assert rows[1]['params_added'] == rows[1]['params'] - rows[0]['params'] > 0
  assert rows[1]['step_growth'] == pytest.approx(rows[1]['step_s'] / rows[0]['step_s'] - 1)
  text = open(out + '.md').read()
  assert text in capsys.readouterr().out and '| cifar_resnet20 | 32x32 | se |' in text


@pytest.mark.parametrize('argv,message', [
    (['--networks=resnet50,vgg16'], "--networks='resnet50,vgg16': vgg16; valid: resnet18"),
    (['--attentions=cbam'], "--attentions='cbam': cbam; valid: none"),
    (['--rounds=0'], '--rounds=0'),
    (['--out=/no/such/folder/cost'], 'folder /no/such/folder is not writable'),
])
def test_mistakes_are_one_line(argv, message, capsys):
  assert cost_table.main(argv) == 2
  err = capsys.readouterr().err.strip()
  assert err.startswith('error: ') and message in err and len(err.splitlines()) == 1
