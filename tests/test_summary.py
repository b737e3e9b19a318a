"""The model summary: parameter counts, XLA FLOPs with analytic golden values, the CLI."""

import json

import flax.linen as nn
import pytest

from pfca_jax.models import summary


class OneConv(nn.Module):
  """A 3x3 conv, stride 1, no padding, no bias: FLOPs = 2 x (output pixels) x 9 x C_in x C_out."""

  @nn.compact
  def __call__(self, x, train=False):
    return nn.Conv(4, (3, 3), padding='VALID', use_bias=False)(x)


def test_summarize_golden_conv():
  row = summary.summarize(OneConv(), (2, 10, 8, 3))
  assert row['params'] == 3 * 3 * 3 * 4
  assert row['flops'] == 2 * (2 * 8 * 6) * 9 * 3 * 4


def test_compare_parameter_free_attention_adds_no_params_and_few_flops():
  rows = summary.compare('cifar_resnet20', ['none', 'pfca', 'simam', 'se', 'eca'], (1, 32, 32, 3))
  by_name = {r['attention']: r for r in rows}
  assert by_name['none']['params'] == 278_324
  for name in ('pfca', 'simam'):
    assert by_name[name]['params_added'] == 0
  # SE on widths 16/32/64 with reduction 16: 3 blocks each of 2 C^2/16 + C/16 + C.
  se = sum(3 * (2 * c * c // 16 + c // 16 + c) for c in (16, 32, 64))
  assert by_name['se']['params_added'] == se
  # ECA: k = 3 for C = 16, 32, 64, one kernel per block, 9 blocks.
  assert by_name['eca']['params_added'] == 27
  # Attention costs something, but under 2% of the network's FLOPs.
  for name in ('pfca', 'simam', 'se', 'eca'):
    assert 0 < by_name[name]['flops_growth'] < 0.02, name
  assert by_name['none']['flops_growth'] == 0


def test_compare_without_none_has_no_growth_columns():
  rows = summary.compare('cifar_resnet20', ['pfca'], (1, 32, 32, 3))
  assert 'flops_growth' not in rows[0]
  assert 'params added' not in summary.format_table(rows)


def test_cli_prints_table_and_writes_json(tmp_path, capsys):
  out = tmp_path / 'rows.json'
  assert summary.main(['--model=msrresnet', '--scale=2', '--attentions=pfca', '--input_size=8x12',
                       f'--json={out}']) == 0
  text = capsys.readouterr().out
  assert 'msrresnet at input 1x8x12x3' in text
  lines = [line.split() for line in text.splitlines() if line.startswith(('none', 'pfca'))]
  assert [line[:2] for line in lines] == [['none', '1,369,859'], ['pfca', '1,369,859']]
  rows = json.loads(out.read_text())  # 'none' joined as the baseline although not asked for.
  assert [r['attention'] for r in rows] == ['none', 'pfca'] and rows[1]['params_added'] == 0


@pytest.mark.parametrize('argv, message', [
    (['--model=resnet51'], "invalid choice: 'resnet51'"),
    (['--model=resnet50', '--attentions=cbam'], "unknown attention 'cbam'; valid: none, pfca, se, eca, simam"),
    (['--model=resnet50', '--input_size=0'], "--input_size='0' is not a positive size"),
    (['--model=resnet50', '--batch_size=0'], '--batch_size=0 must be >= 1'),
    (['--model=msrresnet', '--scale=5'], 'scale=5 is not supported; valid: (2, 3, 4)'),
    (['--model=resnet50', '--attention=pfca'], '--attention is not a flag of python -m pfca_jax.models.summary any '
                                               'more: use --attentions=NAME[,NAME...]'),
    (['--model=resnet50', '--atentions=pfca'], 'unknown flag --atentions; the flags of python -m '
                                               'pfca_jax.models.summary are --model, --attentions, --input_size'),
])
def test_cli_bad_arguments_exit_2_with_one_line(argv, message, capsys):
  assert summary.main(argv) == 2
  out, err = capsys.readouterr()
  assert out == '' and len(err.splitlines()) == 1 and err.startswith('error: ') and message in err, err


def test_default_input_sizes():
  assert [summary.default_input_size(n) for n in ('resnet50', 'cifar_resnet56', 'msrresnet')] == [224, 32, 64]

