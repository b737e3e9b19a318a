"""pfca_jax.bench runs end to end on a tiny entry and refuses bad arguments in one line (figures are not tested)."""

import json

import pytest

from pfca_jax.bench import timing


def test_bench_writes_rows_with_overheads(tmp_path, capsys):
  out = tmp_path / 'bench.json'
  assert timing.main(['--benchmarks=cifar_resnet20', '--attentions=none,pfca', '--batch_size=8', '--rounds=2',
                     '--steps=1', '--round_seconds=0.5', '--torch=off', f'--json={out}']) == 0
  result = json.loads(out.read_text())
  rows = {r['name']: r for r in result['rows']}
  assert set(rows) == {'cifar_resnet20 + none', 'cifar_resnet20 + pfca'}
  none, pfca = rows['cifar_resnet20 + none'], rows['cifar_resnet20 + pfca']
  assert none['overhead_vs_none'] == 0.0
  assert pfca['overhead_vs_none'] == pytest.approx(pfca['step_s_median'] / none['step_s_median'] - 1)
  assert len(pfca['step_s_rounds']) == 2 and sorted(pfca['step_s_rounds'])[0] == pfca['step_s_min']
  ratios = [t / t0 - 1 for t, t0 in zip(pfca['step_s_rounds'], none['step_s_rounds'])]
  assert pfca['paired_overhead_vs_none'] == pytest.approx(sum(ratios) / 2)  # The median of two.
  assert pfca['paired_ci95'] is None  # Two rounds give no 95% interval.
  assert none['params'] == pfca['params'] == 278_324
  assert none['step_s_min'] <= none['step_s_median'] <= none['step_s_max']
  assert none['examples_per_s'] == pytest.approx(8 / none['step_s_median'])
  assert none['compile_s'] > 0 and none['peak_bytes'] > 0
  # PFCA adds a pass over each block's output (its spatial mean) to what the step reads and writes.
  assert 0 < none['bytes_accessed'] < pfca['bytes_accessed']
  # And its small (N, C) operations (the weights and their derivative) to the operations it runs.
  assert 0 < none['hlo_ops'] < pfca['hlo_ops']
  # About 0.5 s of steps a round: far more than one step of this tiny network, never fewer than --steps.
  assert none['steps_per_round'] > 1 and pfca['steps_per_round'] > 1
  assert 'cifar_resnet20 + pfca' in capsys.readouterr().out
  assert none['side'] == pfca['side'] == 32  # CIFAR's own.


def test_side_sets_the_input_of_every_entry(tmp_path):
  # The digits quick start's shape: 16x16 inputs, whose activations are a quarter of those at 32x32.
  out = tmp_path / 'bench.json'
  assert timing.main(['--benchmarks=cifar_resnet20', '--attentions=none,pfca', '--batch_size=8', '--rounds=1',
                     '--steps=1', '--side=16', '--torch=off', f'--json={out}']) == 0
  rows = {r['attention']: r for r in json.loads(out.read_text())['rows']}
  assert rows['none']['side'] == rows['pfca']['side'] == 16
  entry = timing.Entry('cifar_resnet20', 'none', 8, 'auto', 'float32', side=32)
  entry.compile()
  assert rows['none']['bytes_accessed'] < entry.bytes_accessed  # The same step at CIFAR's 32x32.


STEP_HLO = '''HloModule jit_step, entry_computation_layout={(f32[8,4]{1,0})->(f32[8]{0}, f32[])}

%add (a: f32[], b: f32[]) -> f32[] {
  %a = f32[] parameter(0)
  %b = f32[] parameter(1)
  ROOT %sum = f32[] add(%a, %b)
}

ENTRY %main.9 (x.1: f32[8,4]) -> (f32[8]{0}, f32[]) {
  %x.1 = f32[8,4]{1,0} parameter(0)
  %constant.2 = f32[] constant(0)
  %bitcast.3 = f32[4,8]{0,1} bitcast(%x.1)
  %ynn_fusion = (f32[8]{0}, f32[8]{0}) fusion(%x.1, %constant.2), kind=kCustom, calls=%add
  %get-tuple-element.4 = f32[8]{0} get-tuple-element(%ynn_fusion), index=0
  %copy.5 = f32[8,4]{0,1} copy(%x.1), metadata={op_name="jit(step)/transpose" source_file="a = b.py"}
  %reduce.6 = f32[] reduce(%copy.5, %constant.2), dimensions={0,1}, to_apply=%add
  ROOT %tuple.7 = (f32[8]{0}, f32[]) tuple(%get-tuple-element.4, %reduce.6)
}
'''


def test_step_ops_count_what_runs_in_the_entry_computation():
  # The fusion (tuple-shaped), the copy and the reduce; not the parameter, constant, bitcast, tuple
  # plumbing, nor the instructions of the called computation.
  assert timing.count_step_ops(STEP_HLO) == 3


@pytest.mark.parametrize('n,ranks', [(5, None), (6, (1, 6)), (10, (2, 9)), (40, (14, 27)), (100, (40, 61))])
def test_median_interval_takes_the_binomial_order_statistics(n, ranks):
  # The ranks of the textbook tables (e.g. Conover, Practical Nonparametric Statistics): the values are
  # their own ranks, shuffled so that the function has to sort them.
  values = [float(v) for v in range(1, n + 1)]
  values = values[1::2] + values[::2]
  assert timing.median_ci95(values) == (None if ranks is None else tuple(map(float, ranks)))


@pytest.mark.parametrize('argv,message', [
    (['--benchmarks=resnet49'], "--benchmarks='resnet49': resnet49; valid: resnet18, resnet34, resnet50"),
    (['--attentions=none,cbam'], "--attentions='none,cbam': cbam; valid: none, pfca"),
    (['--batch_size=3'], '--batch_size'),
    (['--round_seconds=-1'], '--round_seconds=-1.0 must be >= 0'),
    (['--torch_layouts=nhwc'], "--torch_layouts='nhwc': nhwc; valid: nchw, channels_last"),
    (['--benchmarks=cifar_resnet56,resnet50', '--side=16'], '--side=16 is below what resnet50 takes: at least 32'),
    (['--benchmarks=cifar_resnet20', '--side=2'], '--side=2 is below what cifar_resnet20 takes: at least 4'),
    (['--rounds=x'], "argument --rounds: invalid int value: 'x'"),
    (['--attention=pfca'], '--attention is not a flag of python -m pfca_jax.bench any more: use --attentions='),
    (['--benchmark=resnet50'], '--benchmark is not a flag of python -m pfca_jax.bench any more: use --benchmarks='),
    (['--bogus=1'], 'unknown flag --bogus; the flags of python -m pfca_jax.bench are --benchmarks, --attentions, '),
])
def test_bad_arguments_are_one_line(argv, message, capsys):
  assert timing.main(argv + ['--torch=off']) == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and err[0].startswith('error: ') and message in err[0]


def test_rounds_alternate_the_order_of_entries():
  calls = []

  class Fake:
    def __init__(self, name):
      self.name = name

    def run(self, n):
      calls.append(self.name)
      return 0.01

  entries = [Fake('a'), Fake('b'), Fake('c')]
  timing.time_rounds(entries, rounds=3, steps_per_round=2, log=lambda text: None)
  assert calls == ['a', 'b', 'c', 'c', 'b', 'a', 'a', 'b', 'c']
  assert all(e.times == [0.01] * 3 and e.steps == 2 for e in entries)


def test_table_prints_both_overheads_and_the_interval():
  rounds = {'none': [1.0] * 6, 'pfca': [1.01, 1.02, 1.03, 1.04, 1.05, 1.06]}

  class Timed:
    def __init__(self, attention):
      self.name, self.benchmark, self.attention, self.batch = f'net + {attention}', 'net', attention, 4
      self.times = rounds[attention]

  rows = timing.summarize([Timed('none'), Timed('pfca')])
  line = timing.format_table(rows).splitlines()[-1]
  assert line.startswith('net + pfca')
  # Ratio of medians +3.5%; paired: median of the rounds' ratios, interval from the 1st and 6th of six.
  assert '+3.5%' in line and '+3.5% [+1.0, +6.0]' in line
