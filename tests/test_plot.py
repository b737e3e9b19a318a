"""`pfca_jax.plot` on synthetic workdirs: the series it reads, the panels it draws, its one-line errors."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from pfca_jax import plot


def _write_run(workdir, lines, task=None, attention=None, tail=''):
  os.makedirs(workdir, exist_ok=True)
  if task:
    config = {'task': task, 'dataset': 'cifar100' if task == 'classification' else 'div2k',
              'model': {'name': 'resnet20' if task == 'classification' else 'msrresnet', 'attention': attention}}
    with open(os.path.join(workdir, 'config.json'), 'w') as f:
      json.dump(config, f)
  with open(os.path.join(workdir, 'metrics.jsonl'), 'w') as f:
    f.write(''.join(json.dumps(line) + '\n' for line in lines) + tail)
  return str(workdir)


def _classification_lines(offset):
  """Steps 100..400, with step 200 logged twice as a resumed run does: the second values must win."""
  lines = []
  for step, loss in ((100, 2.0), (200, 1.5), (200, 1.4), (300, 1.0), (400, 0.8)):
    lines.append({'step': step, 'train/loss': loss + offset, 'train/lr': 0.1, 'train/images_per_sec': 200.0})
    if step in (200, 400):
      lines.append({'step': step, 'eval/test/top1': step / 1000 + offset, 'eval/test/top5': 0.9,
                    'eval/test/loss': 1.0, 'eval/test/examples': 360})
  return lines


def _sr_lines(offset):
  lines = []
  for step in (100, 200):
    lines.append({'step': step, 'train/loss': 0.1 - step / 10_000 + offset})
    for name, base in (('div2k', 30.0), ('set5', 32.0)):
      lines.append({'step': step, f'eval/{name}/psnr_y': base + step / 100 + offset, f'eval/{name}/ssim_y': 0.9,
                    f'eval/{name}/psnr_rgb': base - 1, f'eval/{name}/images': 10})
  return lines


@pytest.fixture
def classification_runs(tmp_path):
  return [_write_run(tmp_path / 'none_s0', _classification_lines(0.0), 'classification', 'none'),
          _write_run(tmp_path / 'pfca_s0', _classification_lines(0.01), 'classification', 'pfca')]


@pytest.fixture
def sr_runs(tmp_path):
  return [_write_run(tmp_path / 'sr_a', _sr_lines(0.0), 'super_resolution', 'pfca'),
          _write_run(tmp_path / 'sr_b', _sr_lines(0.5), 'super_resolution', 'pfca')]


def _lines(ax):
  """{legend label: (steps, values)} of an axes' labelled lines."""
  return {line.get_label(): (list(line.get_xdata()), list(line.get_ydata()))
          for line in ax.lines if not line.get_label().startswith('_')}


def _check_png(path, min_size=(600, 300)):
  assert os.path.getsize(path) > 0
  with Image.open(path) as image:
    assert image.format == 'PNG'
    assert image.size[0] >= min_size[0] and image.size[1] >= min_size[1]
    assert len(np.unique(np.asarray(image.convert('L')))) > 10  # Curves and text, not a blank canvas.


def test_read_metrics_later_line_wins(classification_runs):
  metrics = plot.read_metrics(classification_runs[0])
  assert metrics['train/loss'] == [(100, 2.0), (200, 1.4), (300, 1.0), (400, 0.8)]
  assert metrics['eval/test/top1'] == [(200, 0.2), (400, 0.4)]
  assert metrics['eval/test/examples'] == [(200, 360.0), (400, 360.0)]
  assert set(metrics) == {'train/loss', 'train/lr', 'train/images_per_sec', 'eval/test/top1', 'eval/test/top5',
                          'eval/test/loss', 'eval/test/examples'}


def test_read_metrics_drops_the_stale_tail_of_a_resumed_run(tmp_path):
  # Attempt 1 logged to step 300 (checkpoint at 200) and died; attempt 2 has logged only step 250 so far.
  lines = [{'step': 100, 'train/loss': 3.0}, {'step': 200, 'train/loss': 2.0}, {'step': 300, 'train/loss': 1.0},
           {'step': 300, 'eval/test/top1': 0.5}, {'step': 250, 'train/loss': 1.8}]
  workdir = _write_run(tmp_path / 'run', lines, tail='{"step": 260, "train/lo')  # A line being written.
  metrics = plot.read_metrics(workdir)
  assert metrics == {'train/loss': [(100, 3.0), (200, 2.0), (250, 1.8)]}


def test_torn_lines_are_skipped_with_one_warning(tmp_path, capsys):
  # A run killed twice mid-write, each torn line ended by the resumed run, and a line being written now.
  lines = [{'step': 100, 'train/loss': 3.0}, {'step': 200, 'train/loss': 2.0}]
  workdir = _write_run(tmp_path / 'run', lines, tail='{"step": 300, "train/lo\n{"step": 200, "train/loss": 1.9}\n'
                                                     '{"st\n{"step": 300, "train/loss": 1.0}\n{"step": 400')
  assert plot.read_metrics(workdir) == {'train/loss': [(100, 3.0), (200, 1.9), (300, 1.0)]}
  path = os.path.join(workdir, 'metrics.jsonl')
  assert capsys.readouterr().err == f'warning: skipped 2 torn or non-metrics line(s) of {path}: 3, 5\n'

  out = str(tmp_path / 'torn.png')
  assert plot.main([f'--workdirs={workdir}', f'--out={out}']) == 0
  captured = capsys.readouterr()
  assert captured.out == out + '\n'
  assert captured.err == f'warning: skipped 2 torn or non-metrics line(s) of {path}: 3, 5\n'
  _check_png(out)


def test_classification_figure_and_png(classification_runs, tmp_path):
  fig = plot.make_figure(classification_runs)
  loss_ax, top1_ax = fig.axes
  assert top1_ax.get_title() == 'test: top-1 accuracy'
  assert _lines(loss_ax) == {'none': ([100, 200, 300, 400], [2.0, 1.4, 1.0, 0.8]),
                             'pfca': ([100, 200, 300, 400], pytest.approx([2.01, 1.41, 1.01, 0.81]))}
  assert _lines(top1_ax) == {'none: 40.00%': ([200, 400], [0.2, 0.4]),
                             'pfca: 41.00%': ([200, 400], pytest.approx([0.21, 0.41]))}
  assert top1_ax.yaxis.get_major_formatter()(0.5, 0).rstrip('0.%') == '5'  # Accuracy shown as 50%, not 0.5.
  assert fig.get_suptitle() == 'resnet20 on cifar100'

  out = str(tmp_path / 'out' / 'cls.png')
  os.makedirs(os.path.dirname(out))
  assert plot.plot_runs(classification_runs, out) == out
  _check_png(out)


def test_super_resolution_panels_per_eval_set_and_labels(sr_runs, tmp_path):
  fig = plot.make_figure(sr_runs)
  assert [ax.get_title() for ax in fig.axes] == ['train: loss', 'div2k: PSNR-Y (dB)', 'set5: PSNR-Y (dB)']
  # Both runs are pfca: the workdir's name tells them apart; one attention, one colour, two line styles.
  assert _lines(fig.axes[2]) == {'pfca (sr_a): 34.00': ([100, 200], [33.0, 34.0]),
                                 'pfca (sr_b): 34.50': ([100, 200], [33.5, 34.5])}
  a, b = fig.axes[1].lines
  assert a.get_color() == b.get_color() and a.get_linestyle() != b.get_linestyle()

  fig = plot.make_figure(sr_runs, metric='eval/set5/ssim_y')
  assert [ax.get_title() for ax in fig.axes] == ['train: loss', 'set5: SSIM-Y']
  fig = plot.make_figure(sr_runs, metric='psnr_rgb')
  assert [ax.get_title() for ax in fig.axes][1:] == ['div2k: PSNR-RGB (dB)', 'set5: PSNR-RGB (dB)']

  out = str(tmp_path / 'sr.png')
  plot.plot_runs(sr_runs, out)
  _check_png(out, min_size=(1000, 300))


def test_labels_fall_back_to_the_workdir_name(tmp_path):
  runs = [_write_run(tmp_path / 'a' / 'seed0', _sr_lines(0.0)),
          _write_run(tmp_path / 'b' / 'seed0', _sr_lines(0.0)),
          _write_run(tmp_path / 'none_run', _sr_lines(0.0), 'super_resolution', 'none')]
  configs = [plot.read_config(w) for w in runs]
  assert configs[0] is None
  assert plot.run_labels(runs, configs) == [os.path.normpath(runs[0]), os.path.normpath(runs[1]), 'none']
  assert plot.run_labels(runs[1:], configs[1:]) == ['seed0', 'none']


def test_smoothing_is_a_trailing_mean_over_the_raw_curve(classification_runs):
  fig = plot.make_figure(classification_runs[:1], smooth=2)
  loss_ax = fig.axes[0]
  assert 'trailing mean of 2' in loss_ax.get_title()
  assert _lines(loss_ax) == {'none': ([100, 200, 300, 400], pytest.approx([2.0, 1.7, 1.2, 0.9]))}
  assert [list(line.get_ydata()) for line in loss_ax.lines][0] == [2.0, 1.4, 1.0, 0.8]  # Raw, drawn faintly.


def test_command_line(classification_runs, tmp_path):
  result = subprocess.run([sys.executable, '-m', 'pfca_jax.plot', '--workdirs=' + ','.join(classification_runs),
                           '--metric=top5'],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False)
  assert result.returncode == 0, result.stderr
  out = os.path.realpath(tmp_path / 'plot.png')  # The default --out: plot.png in the current directory.
  assert os.path.realpath(result.stdout.strip()) == out
  _check_png(out)


# The command line's own mistakes (missing, positional or unknown arguments, --smooth) are in test_bad_inputs.py's table.
@pytest.mark.parametrize('case, expected', [
    ('not_a_run', "has no metrics.jsonl: it must be a training run's workdir"),
    ('url', "workdir 'gs://bucket/run' is a URL; it must be a local or mounted folder"),
    ('empty', 'metrics.jsonl has no metrics lines: the run has not logged yet'),
    ('not_metrics', 'metrics.jsonl has no metrics lines: skipped 2 torn or non-metrics line(s) of {tmp}/bad/'
                    'metrics.jsonl: 1, 2'),
    ('metric', "unknown --metric 'top9'; available: top1, top5, loss, eval/test/top1, eval/test/top5"),
    ('unwritable', "cannot write --out='{tmp}/no/such/dir/p.png'"),
    ('format', "unknown image format 'xyz'; valid: "),
    ('twice', 'is given more than once'),
])
def test_errors_are_one_line_and_exit_2(case, expected, classification_runs, tmp_path, capsys):
  run = classification_runs[0]
  bad = str(tmp_path / 'bad')
  os.makedirs(bad)
  argv = {  # Lambdas: only the case under test writes into `bad`.
      'not_a_run': lambda: [f'--workdirs={bad}'],
      'url': lambda: ['--workdirs=gs://bucket/run'],
      'empty': lambda: ['--workdirs=' + _write_run(bad, [], tail='\n  \n')],
      'not_metrics': lambda: ['--workdirs=' + _write_run(bad, [{'step': 'one', 'train/loss': 1.0}],
                                                         tail='{"step": 2, "tr\n')],
      'metric': lambda: [f'--workdirs={run}', '--metric=top9'],
      'unwritable': lambda: [f'--workdirs={run}', f'--out={tmp_path}/no/such/dir/p.png'],
      'format': lambda: [f'--workdirs={run}', f'--out={tmp_path}/p.xyz'],
      'twice': lambda: [f'--workdirs={run},{run}/'],
  }[case]()
  assert plot.main(argv) == 2
  captured = capsys.readouterr()
  assert captured.out == ''
  assert len(captured.err.splitlines()) == 1, captured.err
  assert captured.err.startswith('error: ')
  assert expected.replace('{tmp}', str(tmp_path)) in captured.err
  assert not os.path.exists(tmp_path / 'p.xyz')
