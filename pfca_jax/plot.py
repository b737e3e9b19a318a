"""Training curves of one or several runs on one figure, so e.g. none vs pfca compare at a glance.

Usage:

    python -m pfca_jax.plot --workdirs=WORKDIR[,WORKDIR...] [--out=FILE.png] [--metric=NAME] [--smooth=N]

Each WORKDIR is a training run's --workdir: its metrics.jsonl (written by `pfca_jax.train.reporting`) gives
the curves, its config.json (when present) the task and the label. The figure has the train loss vs
step on the left, then one panel per evaluation set with the eval metric vs step: top-1 accuracy for
classification, PSNR-Y for super-resolution. --metric picks another one: `eval/<set>/<name>` (that
set only), a bare `<name>` (every evaluation set that has it) or a `train/<name>` scalar such as
train/images_per_sec. The legends of the metric panels give each run's last value.

Runs are labelled by their attention, plus the workdir's name where two runs share one (seeds,
options); without config.json, by the workdir's name. Runs of one attention share a colour and differ
by line style.

--out defaults to plot.png in the current directory: a workdir belongs to one run, and the figure
compares several. The format follows the extension (.png, .pdf, .svg); the written path is printed.
--smooth=N draws the train loss as a trailing mean over N log lines, over the raw curve drawn faintly;
it is off (1) by default and never touches the evaluation curves.

A resumed run appends again from its checkpoint step: at a repeated step the later line wins, and a
step going backwards drops what the earlier attempt had logged from that step on. A run killed
mid-write leaves a torn line in metrics.jsonl (kept there, on a line of its own, when the run resumes):
torn and other non-metrics lines are skipped, with one warning per file on stderr naming them, and the
good lines are plotted (see `pfca_jax.train.metrics_log`).

Mistakes (a missing or URL workdir, no metrics.jsonl or one without a single metrics line, an unknown
--metric, an unwritable --out) end with one line on stderr and exit status 2.

For scripts: `read_metrics(workdir)` -> {name: [(step, value), ...]}, `read_config`, `run_labels`,
`make_figure(...)` -> a matplotlib Figure to add to, and `plot_runs(workdirs, out, metric)` -> path.
"""

import collections
import json
import math
import os
import sys

import numpy as np

from pfca_jax.cli import runner
from pfca_jax.errors import UserError
from pfca_jax.train import metrics_log

DEFAULT_METRIC = {'classification': 'top1', 'super_resolution': 'psnr_y'}
_COUNTS = ('/examples', '/images')  # Sizes of the evaluation sets, not scores: never a curve.
_FRACTIONS = ('top1', 'top5', 'accuracy')  # Stored as 0..1, shown as percentages.
_PRETTY = {'top1': 'top-1 accuracy', 'top5': 'top-5 accuracy', 'psnr_y': 'PSNR-Y (dB)',
           'psnr_rgb': 'PSNR-RGB (dB)', 'ssim_y': 'SSIM-Y', 'lr': 'learning rate', 'grad_norm': 'gradient norm',
           'images_per_sec': 'images/s', 'input_wait_share': 'share of time waiting for input'}
_LINESTYLES = ('-', '--', ':', '-.')


def _metrics_path(workdir: str) -> str:
  # Imported on use: validation imports the models (JAX), which reading a JSON file does not need.
  from pfca_jax.train.validation import check_local_path
  check_local_path(os.fspath(workdir), 'workdir')  # os.path would take 'gs://b/run' for './gs:/b/run'.
  if not os.path.exists(workdir):
    raise UserError(f'workdir {workdir!r} does not exist')
  if not os.path.isdir(workdir):
    raise UserError(f'workdir {workdir!r} is not a directory')
  path = os.path.join(workdir, 'metrics.jsonl')
  if not os.path.isfile(path):
    raise UserError(f"workdir {workdir!r} has no metrics.jsonl: it must be a training run's workdir "
                    '(the --workdir given to pfca_jax.main)')
  return path


def read_metrics(workdir: str) -> dict[str, list[tuple[int, float]]]:
  """WORKDIR/metrics.jsonl as {name: [(step, value), ...]} sorted by step, one value per step."""
  path = _metrics_path(workdir)
  warnings = []  # Held back: a file with nothing to plot is one error line, not a warning and an error.
  try:
    records = metrics_log.read(path, warn=warnings.append)
  except OSError as e:
    raise UserError(f'cannot read {path}: {e.strerror or e}') from None
  series = collections.defaultdict(dict)  # name -> {step: value}, names in order of first appearance.
  last_step = None
  for record in records:
    step = record['step']
    if last_step is not None and step < last_step:
      # A resumed run restarted at its checkpoint: the earlier attempt's lines from here on are stale.
      for values in series.values():
        for stale in [s for s in values if s >= step]:
          del values[stale]
    last_step = step
    for name, value in record.items():
      if name != 'step':
        series[name][step] = float(value)
  metrics = {name: sorted(values.items()) for name, values in series.items() if values}
  if not metrics:
    raise UserError(f'{path} has no metrics lines: ' + (
        warnings[0] if warnings else 'the run has not logged yet, or the file was emptied'))
  for message in warnings:
    metrics_log.warn_on_stderr(message)
  return metrics


def read_config(workdir: str) -> dict | None:
  """WORKDIR/config.json as written at the start of training, or None without one."""
  path = os.path.join(workdir, 'config.json')
  if not os.path.isfile(path):
    return None
  try:
    with open(path) as f:
      config = json.load(f)
  except (OSError, ValueError) as e:
    raise UserError(f'{path} is not readable JSON ({e})') from None
  return config if isinstance(config, dict) else None


def _attention(config: dict | None) -> str | None:
  model = (config or {}).get('model')
  return model.get('attention') if isinstance(model, dict) else None


def run_labels(workdirs: list[str], configs: list[dict | None]) -> list[str]:
  """The attention, with the workdir's name where two runs share one; the name alone without config."""
  attentions = [_attention(c) for c in configs]
  shared = collections.Counter(attentions)

  def labels(names):
    return [name if a is None else a if shared[a] == 1 else f'{a} ({name})' for a, name in zip(attentions, names)]

  result = labels([os.path.basename(os.path.abspath(w)) for w in workdirs])
  if len(set(result)) < len(result):  # Same folder name under different parents: show the paths.
    result = labels([os.path.normpath(w) for w in workdirs])
  return result


def _styles(configs: list[dict | None], labels: list[str]) -> list[dict]:
  """One colour per attention (per run without config), line styles telling its runs apart."""
  groups = [_attention(c) or label for c, label in zip(configs, labels)]
  colours = {g: f'C{i % 10}' for i, g in enumerate(dict.fromkeys(groups))}
  seen = collections.Counter()
  styles = []
  for g in groups:
    styles.append({'color': colours[g], 'linestyle': _LINESTYLES[seen[g] % len(_LINESTYLES)]})
    seen[g] += 1
  return styles


def _name(key: str) -> str:
  return key.rsplit('/', 1)[-1]


def resolve_metric(metric: str | None, tasks: list[str], keys: list[str]) -> list[str]:
  """The metric keys to draw, one panel each: [] when there is no evaluation yet to draw by default."""
  evals = [k for k in keys if k.startswith('eval/') and k.count('/') >= 2 and not k.endswith(_COUNTS)]
  if metric is None:
    for name in [DEFAULT_METRIC[t] for t in tasks if t in DEFAULT_METRIC] + list(DEFAULT_METRIC.values()):
      if any(_name(k) == name for k in evals):
        metric = name
        break
    else:
      return [k for k in evals if _name(k) == _name(evals[0])] if evals else []
  if '/' in metric:
    if metric in keys and not metric.endswith(_COUNTS):
      return [metric]
  else:
    matches = [k for k in evals if _name(k) == metric]
    if matches:
      return matches
  choices = list(dict.fromkeys(_name(k) for k in evals)) + evals + [k for k in keys if k.startswith('train/')]
  raise UserError(f'unknown --metric {metric!r}; available: {", ".join(choices) or "none (no metrics logged)"}')


def _pretty(name: str) -> str:
  return _PRETTY.get(name, name.replace('_', ' '))


def _format(name: str, value: float) -> str:
  if name in _FRACTIONS:
    return f'{value:.2%}'
  return f'{value:.2f}' if name.startswith('psnr') else f'{value:.4g}'


def _trailing_mean(values: np.ndarray, n: int) -> np.ndarray:
  """Mean of each value and the n - 1 before it (fewer at the start)."""
  sums = np.cumsum(np.concatenate([[0.0], values]))
  ends = np.arange(1, len(values) + 1)
  starts = np.maximum(ends - n, 0)
  return (sums[ends] - sums[starts]) / (ends - starts)


def _title(configs: list[dict | None]) -> str:
  parts = []
  for c in configs:
    if c and isinstance(c.get('model'), dict):
      scale = f' x{c["scale"]}' if c.get('scale') else ''
      parts.append(f'{c["model"].get("name", "?")}{scale} on {c.get("dataset", "?")}')
  return ' | '.join(dict.fromkeys(parts)) or 'training curves'


def _require_matplotlib() -> None:
  try:
    import matplotlib  # noqa: F401 -- Imported where used, so reading metrics needs no matplotlib.
  except ImportError:
    raise UserError('pfca_jax.plot needs matplotlib: pip install -r requirements.txt (it pins one)') from None


def make_figure(workdirs: list[str], metric: str | None = None, smooth: int = 1):
  """The figure `plot_runs` saves: train loss first, then one axes per metric key."""
  _require_matplotlib()
  from matplotlib.backends.backend_agg import FigureCanvasAgg
  from matplotlib.figure import Figure  # Not pyplot: no display, no global figure state.
  from matplotlib.ticker import PercentFormatter

  workdirs = [workdirs] if isinstance(workdirs, (str, os.PathLike)) else list(workdirs)
  if not workdirs:
    raise UserError('no workdir given: pass the --workdir of one or more training runs')
  if smooth < 1:
    raise UserError(f'--smooth={smooth} must be >= 1 (1: no smoothing)')
  real = [os.path.realpath(w) for w in workdirs]
  for w, r in zip(workdirs, real):
    if real.count(r) > 1:
      raise UserError(f'workdir {w!r} is given more than once')
  runs = [read_metrics(w) for w in workdirs]
  configs = [read_config(w) for w in workdirs]
  labels = run_labels(workdirs, configs)
  styles = _styles(configs, labels)
  keys = list(dict.fromkeys(k for run in runs for k in run))
  panels = resolve_metric(metric, [c.get('task') for c in configs if c], keys)

  count = 1 + len(panels)
  cols = 2 if count == 4 else min(count, 3)  # 2x2 rather than 3 + 1.
  rows = math.ceil(count / cols)
  fig = Figure(figsize=(5.5 * cols, 4.2 * rows + 0.5), layout='constrained')
  FigureCanvasAgg(fig)
  axes = fig.subplots(rows, cols, squeeze=False).ravel()
  for ax in axes[count:]:
    fig.delaxes(ax)

  loss_ax = axes[0]
  for run, label, style in zip(runs, labels, styles):
    if 'train/loss' not in run:
      continue
    steps, values = np.array(run['train/loss']).T
    if smooth > 1:
      loss_ax.plot(steps, values, alpha=0.25, linewidth=0.8, **style)
      values = _trailing_mean(values, smooth)
    loss_ax.plot(steps, values, label=label, marker='.' if len(steps) == 1 else None, **style)
  loss_ax.set(title='train: loss' + (f' (trailing mean of {smooth} log lines)' if smooth > 1 else ''),
              xlabel='step', ylabel='loss')

  for ax, key in zip(axes[1:], panels):
    name = _name(key)
    for run, label, style in zip(runs, labels, styles):
      if key in run:
        steps, values = zip(*run[key])
        ax.plot(steps, values, marker='o', markersize=3, label=f'{label}: {_format(name, values[-1])}', **style)
    where = key[:-len(name) - 1].removeprefix('eval/')  # The evaluation set, or 'train'.
    ax.set(title=f'{where}: {_pretty(name)}', xlabel='step', ylabel=_pretty(name))
    if name in _FRACTIONS:
      ax.yaxis.set_major_formatter(PercentFormatter(1.0))

  for ax in axes[:count]:
    ax.grid(alpha=0.3)
    if ax.lines:
      ax.legend(fontsize='small', title='last value' if ax is not loss_ax else None, title_fontsize='small')
    else:
      ax.text(0.5, 0.5, 'nothing logged yet', ha='center', va='center', transform=ax.transAxes)
  fig.suptitle(_title(configs))
  return fig


def plot_runs(workdirs: list[str], out: str = 'plot.png', metric: str | None = None, smooth: int = 1) -> str:
  """Draws the runs in `workdirs` (see the module docstring) into `out`; returns its absolute path."""
  _require_matplotlib()
  from matplotlib.backend_bases import FigureCanvasBase
  formats = FigureCanvasBase.get_supported_filetypes()
  extension = os.path.splitext(out)[1].lower().lstrip('.')
  if extension and extension not in formats:  # Checked before the work of drawing.
    raise UserError(f'--out={out!r}: unknown image format {extension!r}; valid: {", ".join(sorted(formats))}')
  fig = make_figure(workdirs, metric, smooth)
  try:
    fig.savefig(out, format=extension or 'png', dpi=120)
  except OSError as e:
    raise UserError(f'cannot write --out={out!r}: {e.strerror or e}') from None
  return os.path.abspath(out)


def parser() -> runner.Parser:
  p = runner.Parser('python -m pfca_jax.plot', __doc__.split('\n\n')[0],
                    renamed={'positional': 'give the run folders as --workdirs=WORKDIR[,WORKDIR...]'})
  p.add_argument('--workdirs', metavar='WORKDIR[,WORKDIR...]', help="training runs' --workdir, comma-separated")
  p.add_argument('--out', default='plot.png',
                 help='image to write; the extension picks the format (default: ./plot.png)')
  p.add_argument('--metric', default=None,
                 help='eval/<set>/<name>, <name> (every set) or train/<name>; default: top1 or psnr_y')
  p.add_argument('--smooth', type=int, default=1, metavar='N',
                 help='train loss as a trailing mean of N log lines (default 1: raw)')
  return p


def main(argv: list[str] | None = None) -> int:
  """The command's exit status: 0, or 2 after one `error: ...` line (also when called from Python)."""
  return runner.run(_plot, argv)


def _plot(argv: list[str] | None) -> None:
  args = parser().parse_args(argv)
  # Not required by the parser: a positional run folder is then refused as such, naming --workdirs.
  workdirs = [w for w in (args.workdirs or '').split(',') if w]
  if not workdirs:
    raise UserError('--workdirs is required: the training runs to plot, e.g. --workdirs=runs/none,runs/pfca')
  print(plot_runs(workdirs, args.out, args.metric, args.smooth))


if __name__ == '__main__':
  sys.exit(main())
