"""Train one config with several attentions, one after another, and print them side by side.

`config.compare_attentions = 'none,pfca'` makes `python -m pfca_jax.main` train the config once per
attention through `pfca_jax.studies.grid` (each run in WORKDIR/<attention>/; rerunning the command re-reads
finished runs and resumes an interrupted one), then print one table: the headline eval metrics,
parameters, forward GFLOPs at the training input size, measured training throughput and wall time,
each with its difference to the first attention (the baseline), and a footer naming the code and
machine that produced each run. Super-resolution runs add a table per evaluation set with every
image's Y-PSNR / Y-SSIM next to bicubic upscaling. The tables are also written to
WORKDIR/comparison.md, their numbers to WORKDIR/comparison.json, and the runs' curves to
WORKDIR/comparison.png (pfca_jax.plot).

An explicit `--config.model.attention=A` is never ignored: with the list from the config file (the
quick starts' 'none,pfca') it replaces the entries after the first, so the baseline is compared with
A; with an explicit `--config.compare_attentions` too, A must be one of its entries.
"""

import os

import jax

from pfca_jax import plot
from pfca_jax.studies import grid
from pfca_jax.train import progress, provenance, reporting
from pfca_jax.errors import UserError
from pfca_jax.models.attention import ATTENTIONS

# Metric name endings shown in the table, in this order, with their column titles; a table gets a
# column for each final metric that ends so (one per evaluation set).
HEADLINE = (('/top1', 'top-1'), ('/psnr_y', 'PSNR-Y dB'), ('/ssim_y', 'SSIM-Y'))


def parse_attentions(text: str, label: str) -> list[str]:
  """The attentions of a comma-separated list, validated, duplicates dropped, in order; `label` names
  the setting in the error (e.g. 'compare_attentions', '--attentions')."""
  names = list(dict.fromkeys(n.strip() for n in text.split(',') if n.strip()))
  unknown = [n for n in names if n not in ATTENTIONS]
  if unknown or not names:
    raise UserError(f'{label}={text!r}: {", ".join(unknown) or "no attention"} '
                    f'is not valid; give a comma-separated list of {", ".join(ATTENTIONS)}')
  return names


def check_attention_name(name: str, label: str) -> None:
  if name not in ATTENTIONS:
    raise UserError(f'{label}={name!r}: unknown attention; valid: {", ".join(ATTENTIONS)}')


def attentions(config, overrides: dict | None = None) -> list[str]:
  """The attentions to train: config.compare_attentions, with an explicit --config.model.attention applied.

  `overrides` are the command line's explicit --config.FIELD values (config_flags.get_override_values).
  """
  names = parse_attentions(config.compare_attentions, 'compare_attentions')
  explicit = (overrides or {}).get('model.attention')
  if explicit is None:
    return names
  check_attention_name(explicit, '--config.model.attention')
  if 'compare_attentions' not in overrides:
    return list(dict.fromkeys([names[0], explicit]))
  if explicit not in names:
    raise UserError(f'--config.model.attention={explicit} is not one of --config.compare_attentions='
                    f'{config.compare_attentions}, which are the attentions trained: add it to that list, or give '
                    f'--config.compare_attentions= to train {explicit} alone')
  return names


def run(config, workdir: str, overrides: dict | None = None) -> list[dict]:
  """Trains config once per attention; returns one row per run (results.json plus cost)."""
  rows = grid.train_each(config, workdir, attentions(config, overrides))
  workdir = os.path.abspath(workdir)
  text = format_tables(rows)
  if jax.process_index() == 0:
    print('\n' + text, flush=True)
    with open(os.path.join(workdir, 'comparison.md'), 'w') as f:
      f.write(text + '\n')
    reporting.write_json(workdir, 'comparison.json', {'runs': [
        {k: r[k] for k in ('attention', 'workdir', 'final', 'best', 'params', 'cost', 'train_images_per_sec',
                           'wall_time_s', 'per_image', 'provenance', 'sessions') if k in r} for r in rows]})
    figure = plot.plot_runs([r['workdir'] for r in rows], os.path.join(workdir, 'comparison.png'))
    print(f'Written: {os.path.join(workdir, "comparison.md")}, {figure}', flush=True)
  return rows


def headline_metrics(final: dict) -> list[tuple[str, str]]:
  """(metric name, column title) of the final metrics worth a column, e.g. ('eval/test/top1', 'test top-1')."""
  columns = []
  for ending, title in HEADLINE:
    for name in sorted(final):
      if name.endswith(ending):
        dataset = name.split('/')[1]
        columns.append((name, f'{dataset} {title}'))
  return columns


def _value(name: str, value: float) -> str:
  return f'{100 * value:.2f}%' if name.endswith('/top1') else f'{value:.4f}' if 'ssim' in name else f'{value:.2f}'


def _delta(name: str, value: float, base: float) -> str:
  if name.endswith('/top1'):
    return f'{100 * (value - base):+.2f}'
  return f'{value - base:+.4f}' if 'ssim' in name else f'{value - base:+.2f}'


def _relative(value: float | None, base: float | None) -> str:
  return f' ({100 * (value / base - 1):+.1f}%)' if value and base else ''


def table(header: list[str], lines: list[list[str]]) -> str:
  widths = [max(len(row[i]) for row in [header] + lines) for i in range(len(header))]
  fmt = lambda row: '| ' + ' | '.join(cell.ljust(w) for cell, w in zip(row, widths)) + ' |'
  return '\n'.join([fmt(header), '|' + '|'.join('-' * (w + 2) for w in widths) + '|'] + [fmt(r) for r in lines])


def format_tables(rows: list[dict]) -> str:
  """The side-by-side table (markdown), plus per-image tables for super-resolution runs."""
  base = rows[0]
  metrics = headline_metrics(base['final'])
  cost = base['cost']
  header = (['attention'] + [title for _, title in metrics]
            + ['params', f'GFLOPs ({cost["input"]})', 'train img/s', 'wall time'])
  lines = []
  for row in rows:
    first = row is base
    cells = [row['attention']]
    for name, _ in metrics:
      value = row['final'].get(name)
      cells.append('n/a' if value is None else _value(name, value) + ('' if first else
                                                                       f' ({_delta(name, value, base["final"][name])})'))
    cells.append(f'{row["params"]:,}' + ('' if first else f' ({row["params"] - base["params"]:+,})'))
    gflops = row['cost']['flops'] / 1e9
    cells.append(f'{gflops:.4f}' + ('' if first else _relative(row['cost']['flops'], cost['flops'])))
    rate = row.get('train_images_per_sec')
    cells.append(('n/a' if rate is None else f'{rate:,.1f}')
                 + ('' if first else _relative(rate, base.get('train_images_per_sec'))))
    cells.append(progress.duration(row.get('wall_time_s', 0.0)))
    lines.append(cells)
  text = [table(header, lines)]
  text += [_per_image_table(name, rows) for name in base.get('per_image') or {}]
  text.append(provenance.footer(rows))
  return '\n\n'.join(text)


def _per_image_table(dataset: str, rows: list[dict]) -> str:
  """Each image's Y-PSNR / Y-SSIM for bicubic and every run, and which runs beat bicubic on it."""
  images = rows[0]['per_image'][dataset]
  header = ['image', 'bicubic'] + [row['attention'] for row in rows]
  lines, wins = [], {row['attention']: 0 for row in rows}
  for i, image in enumerate(images):
    cells = [image['name'], f'{image["bicubic_psnr_y"]:.2f} / {image["bicubic_ssim_y"]:.4f}']
    for row in rows:
      mine = row['per_image'][dataset][i]
      beats = mine['psnr_y'] > mine['bicubic_psnr_y'] and mine['ssim_y'] > mine['bicubic_ssim_y']
      wins[row['attention']] += beats
      cells.append(f'{mine["psnr_y"]:.2f} / {mine["ssim_y"]:.4f}' + ('' if beats else ' (not above bicubic)'))
    lines.append(cells)
  verdict = '; '.join(f'{name} beats bicubic (PSNR-Y and SSIM-Y) on {n}/{len(images)}' for name, n in wins.items())
  return f'{dataset}: Y-PSNR dB / Y-SSIM per image\n\n{table(header, lines)}\n\n{verdict}'
