"""experiments/cost_table.py: parameters and FLOPs against published and hand counts, measured step times,
one-line errors."""

import json

import pytest
from conftest import load_repo_module

cost_table = load_repo_module('experiments/cost_table.py')

WIDTHS = (16, 32, 64)  # CIFAR ResNet-20: 3 basic blocks a stage, 100 classes.


def conv_flops(side, cin, cout, k, stride):
  """FLOPs (2 a multiply-add) of a k x k conv, padding k // 2, on a square map, and its output side.

  Taps that fall on the zero padding are not counted, as XLA's cost analysis does not count them.
  """
  pad = k // 2
  out = (side + 2 * pad - k) // stride + 1
  taps = sum(0 <= o * stride - pad + i < side for o in range(out) for i in range(k))  # Along one axis.
  return 2 * taps * taps * cin * cout, out


def cifar_resnet20_conv_flops(side=32):
  """Convolutions and classifier of CIFAR ResNet-20, by hand: 3x3 convs, 1x1 projections, Dense(64, 100)."""
  total, side = conv_flops(side, 3, WIDTHS[0], 3, 1)
  cin = WIDTHS[0]
  for stage, width in enumerate(WIDTHS):
    for block in range(3):
      stride = 2 if stage and not block else 1
      first, out = conv_flops(side, cin, width, 3, stride)
      total += first + conv_flops(out, width, width, 3, 1)[0]
      if stride != 1 or cin != width:
        total += conv_flops(side, cin, width, 1, stride)[0]
      side, cin = out, width
  return total + 2 * cin * 100


def test_cost_table_rows_and_growth(tmp_path, capsys):
  out = str(tmp_path / 'cost')
  assert cost_table.main(['--networks=cifar_resnet20', '--attentions=none,se', '--rounds=1', '--batch_size=8',
                          f'--out={out}']) == 0
  rows = json.load(open(out + '.json'))['rows']
  assert [r['attention'] for r in rows] == ['none', 'se'] and all(r['input'] == '32x32' for r in rows)
  # The published count (docs: SimAM's reference code), and SE's two Dense layers with biases per block.
  se_params = 3 * sum(2 * c * (c // 16) + c // 16 + c for c in WIDTHS)
  assert [r['params'] for r in rows] == [278_324, 278_324 + se_params] and rows[1]['params_added'] == se_params
  # The rest of the forward pass is BatchNorm, ReLU and the adds, a few FLOPs per activation: measured
  # 1.2% over the convolutions. Counting the padding's taps would add 10%; counting multiply-adds once, -50%.
  convolutions = cifar_resnet20_conv_flops()
  assert convolutions < rows[0]['flops'] < 1.02 * convolutions
  # SE adds a mean and a scaling per attended activation (2 FLOPs), and its two tiny Dense layers:
  # measured 3% over the 2 FLOPs.
  attended = 3 * sum(width * (32 // 2 ** stage) ** 2 for stage, width in enumerate(WIDTHS))
  growth = rows[1]['flops'] - rows[0]['flops']
  assert 2 * attended < growth < 1.06 * 2 * attended
  assert rows[1]['flops_growth'] == pytest.approx(growth / rows[0]['flops'])
  for row in rows:
    assert row['step_s_min'] <= row['step_s'] <= row['step_s_max'] and row['step_s'] > 0
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
