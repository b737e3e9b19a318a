"""An ablation grid: one config trained once per attention and seed, aggregated over the seeds.

`run_grid` trains every (seed, attention) pair of the grid through `pfca_jax.studies.grid` (the driver that
`compare_attentions` uses too), each in WORKDIR/<attention>/seed_<seed>/, seed by seed so that a grid
stopped half-way already holds whole comparisons. Rerunning the same command re-reads finished runs,
resumes the interrupted one and refuses a changed config, naming the fields.
`aggregate` turns the runs' results.json into one row per attention (mean and sample standard
deviation over seeds of each headline eval metric and of the training throughput, parameters and
GFLOPs, and the differences to `none`); `write_results` writes them as NAME.md, NAME.csv and
NAME.png (mean eval curve per attention with a min-max band over seeds; with a single evaluation,
at the end, each seed's value and the mean per attention).
The command line is experiments/ablation.py.
"""

import csv
import math
import os
import statistics

from pfca_jax import plot
from pfca_jax.studies import compare, grid
from pfca_jax.train import progress, provenance
from pfca_jax.errors import UserError


def run_grid(config, workdir: str, attentions: list[str], seeds: int, log=print) -> list[dict]:
  """Trains (or re-reads) every run of the grid, seeds config.seed, config.seed + 1, ...; one dict per run."""
  if seeds < 1:
    raise UserError(f'--seeds={seeds} must be at least 1')
  return grid.train_each(config, workdir, attentions, [config.seed + k for k in range(seeds)], log=log)


def _mean_std(values: list[float]) -> tuple[float, float]:
  return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else float('nan'))


def aggregate(runs: list[dict]) -> tuple[list[str], list[dict]]:
  """(headline metric names, one row per attention in grid order) from the runs of run_grid."""
  metrics = [name for name, _ in compare.headline_metrics(runs[0]['final'])]
  rows = []
  for attention in dict.fromkeys(r['attention'] for r in runs):
    mine = [r for r in runs if r['attention'] == attention]
    row = {'attention': attention, 'seeds': [r['seed'] for r in mine], 'params': mine[0]['params'],
           'flops': mine[0]['cost']['flops'], 'input': mine[0]['cost']['input']}
    for name in metrics:
      row[name] = [r['final'][name] for r in mine]
    row['images_per_sec'] = [r['train_images_per_sec'] for r in mine if r.get('train_images_per_sec')]
    row['wall_time_s'] = [r.get('wall_time_s', 0.0) for r in mine]
    rows.append(row)
  return metrics, rows


def _scale(name: str) -> float:
  return 100.0 if name.endswith('/top1') else 1.0


def _digits(name: str) -> int:
  return 4 if 'ssim' in name else 2


def _title(name: str) -> str:
  return dict(compare.headline_metrics({name: 0.0})).get(name, name)


def _difference(values: list[float], base: list[float]) -> tuple[float, float]:
  """Mean difference and its standard error (unequal variances); nan s.e. with one seed."""
  (m, s), (mb, sb) = _mean_std(values), _mean_std(base)
  return m - mb, math.sqrt(s * s / len(values) + sb * sb / len(base))


def _pm(mean: float, std: float, digits: int) -> str:
  return f'{mean:.{digits}f}' + ('' if math.isnan(std) else f' ± {std:.{digits}f}')


def format_markdown(metrics: list[str], rows: list[dict]) -> str:
  """The summary table (mean ± std over seeds; differences to `none` ± their standard error) and the per-seed table."""
  base = next((r for r in rows if r['attention'] == 'none'), None)
  header = ['attention', 'seeds']
  for name in metrics:
    header += [_title(name), 'vs none']
  header += ['params', 'vs none', f'GFLOPs ({rows[0]["input"]})', 'vs none', 'train img/s', 'vs none']
  lines = []
  for row in rows:
    cells = [row['attention'], str(len(row['seeds']))]
    for name in metrics:
      k, d = _scale(name), _digits(name)
      values = [k * v for v in row[name]]
      cells.append(_pm(*_mean_std(values), d))
      if base is None or row is base:
        cells.append('')
      else:
        diff, se = _difference(values, [k * v for v in base[name]])
        cells.append(f'{diff:+.{d}f}' + ('' if math.isnan(se) else f' ± {se:.{d}f}'))
    cells.append(f'{row["params"]:,}')
    cells.append('' if base is None or row is base else f'{row["params"] - base["params"]:+,}')
    cells.append(f'{row["flops"] / 1e9:.4f}')
    cells.append('' if base is None or row is base else f'{100 * (row["flops"] / base["flops"] - 1):+.2f}%')
    rate = row['images_per_sec']
    cells.append(_pm(*_mean_std(rate), 1) if rate else 'n/a')
    cells.append('' if base is None or row is base or not rate or not base['images_per_sec'] else
                 f'{100 * (statistics.fmean(rate) / statistics.fmean(base["images_per_sec"]) - 1):+.1f}%')
    lines.append(cells)
  seeds_header = ['attention', 'seed'] + [_title(n) for n in metrics] + ['train img/s', 'wall time']
  seed_lines = []
  for row in rows:
    for i, seed in enumerate(row['seeds']):
      rate = row['images_per_sec'][i] if i < len(row['images_per_sec']) else None
      seed_lines.append([row['attention'], str(seed)]
                        + [f'{_scale(n) * row[n][i]:.{_digits(n)}f}' for n in metrics]
                        + ['n/a' if rate is None else f'{rate:.1f}', progress.duration(row['wall_time_s'][i])])
  return (compare.table(header, lines)
          + '\n\nPer run:\n\n' + compare.table(seeds_header, seed_lines))


def write_csv(path: str, metrics: list[str], rows: list[dict]) -> None:
  """One line per attention: mean, std and per-seed values of each metric, cost and throughput."""
  with open(path, 'w', newline='') as f:
    writer = csv.writer(f)
    header = ['attention', 'seeds']
    for name in metrics + ['images_per_sec']:
      header += [f'{name}_mean', f'{name}_std', f'{name}_values']
    writer.writerow(header + ['params', 'gflops', 'input'])
    for row in rows:
      cells = [row['attention'], ' '.join(map(str, row['seeds']))]
      for name in metrics + ['images_per_sec']:
        values = row[name]
        mean, std = _mean_std(values) if values else (float('nan'), float('nan'))
        cells += [f'{mean:.8g}', f'{std:.8g}', ' '.join(f'{v:.8g}' for v in values)]
      writer.writerow(cells + [row['params'], f'{row["flops"] / 1e9:.8g}', row['input']])


def plot_bands(runs: list[dict], metric: str, out: str) -> str:
  """Mean eval curve per attention over its seeds, with a min-max band; returns the path written."""
  import matplotlib
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt
  import numpy as np
  fig, ax = plt.subplots(figsize=(6.4, 4.2))
  series = {}
  for attention in dict.fromkeys(r['attention'] for r in runs):
    curves = [dict(plot.read_metrics(r['workdir']).get(metric, [])) for r in runs if r['attention'] == attention]
    steps = sorted(set.intersection(*(set(c) for c in curves)))
    if steps:
      series[attention] = steps, _scale(metric) * np.array([[c[s] for s in steps] for c in curves])
  if all(len(steps) == 1 for steps, _ in series.values()):
    # Evaluated once, at the end: a curve would be a dot each. Show the seeds and their mean per attention.
    for i, (attention, (steps, values)) in enumerate(series.items()):
      ax.scatter([i] * values.shape[0], values[:, 0], s=14, alpha=0.6)
      ax.errorbar([i], [values.mean()], yerr=[[values.mean() - values.min()], [values.max() - values.mean()]],
                  fmt='_', markersize=18, capsize=6, color='black')
    ax.set_xticks(range(len(series)), [f'{a} (n={v.shape[0]})' for a, (_, v) in series.items()])
    ax.set_title(f'final value at step {next(iter(series.values()))[0][0]}: seeds (dots), mean and min-max')
  else:
    for attention, (steps, values) in series.items():
      line, = ax.plot(steps, values.mean(0), marker='o', markersize=3, label=f'{attention} (n={values.shape[0]})')
      ax.fill_between(steps, values.min(0), values.max(0), color=line.get_color(), alpha=0.2, linewidth=0)
    ax.set_xlabel('step')
    ax.set_title('mean over seeds, band: min-max')
    ax.legend()
  ax.set_ylabel(_title(metric) + (' (%)' if metric.endswith('/top1') else ''))
  ax.grid(alpha=0.3)
  fig.tight_layout()
  fig.savefig(out, dpi=120)
  plt.close(fig)
  return out


def write_results(runs: list[dict], results_dir: str, name: str, header: str) -> list[str]:
  """NAME.md (header + tables), NAME.csv and NAME.png under results_dir; returns their paths."""
  metrics, rows = aggregate(runs)
  os.makedirs(results_dir, exist_ok=True)
  md, table_csv, png = (os.path.join(results_dir, f'{name}.{ext}') for ext in ('md', 'csv', 'png'))
  with open(md, 'w') as f:
    f.write(f'{header}\n\n{format_markdown(metrics, rows)}\n\n{provenance.footer(runs)}\n')
  write_csv(table_csv, metrics, rows)
  plot_bands(runs, metrics[0], png)
  return [md, table_csv, png]
