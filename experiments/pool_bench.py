"""Pools the paired overheads of several `python -m pfca_jax.bench` runs of the same code.

    python experiments/pool_bench.py --benchmark=msrresnet_x4 run1.json run2.json ...
        [--attentions=pfca,se] [--against=none]

One run's 95% interval on a noisy host is wider than the differences it is asked about (on the
2-core CPU, MSRResNet's PFCA and SE overheads of about 5% each came with intervals about 12 points wide).
Every round of a run pairs the entries closely in time, so each round's ratio to `--against`
is a sample of the overhead, and rounds from separate runs of the same compiled steps can be pooled:
the median of all rounds' ratios with its distribution-free 95% interval (pfca_jax.bench.median_ci95),
per attention. `--against=se` compares two attentions directly. Rows missing from a file are a
one-line error naming the file, as is a file that is not a benchmark's JSON.
"""

import json
import statistics
import sys

from pfca_jax.bench.timing import median_ci95, paired_ratios
from pfca_jax.cli import runner


def load_rows(path: str) -> dict:
  """A benchmark JSON's JAX rows, keyed by (benchmark, attention)."""
  try:
    with open(path) as f:
      return {(r['benchmark'], r['attention']): r for r in json.load(f)['rows'] if r.get('framework', 'jax') == 'jax'}
  except (OSError, ValueError, KeyError, TypeError) as e:
    raise SystemExit(f'error: {path} is not a readable pfca_jax.bench JSON ({type(e).__name__}: {e})')


def round_ratios(path: str, rows: dict, benchmark: str, attention: str, against: str) -> list[float]:
  """The paired ratios of one run (`rows` as load_rows(path) gives them)."""
  missing = [a for a in (attention, against) if (benchmark, a) not in rows]
  if missing:
    have = sorted(a for b, a in rows if b == benchmark)
    raise SystemExit(f'error: {path} has no {benchmark} + {", ".join(missing)}; it has: {", ".join(have) or "nothing"}')
  return paired_ratios(rows[benchmark, attention]['step_s_rounds'], rows[benchmark, against]['step_s_rounds'])


def main(argv=None) -> int:
  parser = runner.Parser(prog='experiments/pool_bench.py', description=__doc__.split('\n')[0])
  parser.add_argument('files', nargs='+', help='JSON files written by python -m pfca_jax.bench --json')
  parser.add_argument('--benchmark', required=True)
  parser.add_argument('--attentions', default='pfca,se')
  parser.add_argument('--against', default='none')
  args = parser.parse_args(argv)
  runs = {path: load_rows(path) for path in args.files}
  for attention in args.attentions.split(','):
    ratios = []
    for path, rows in runs.items():
      ratios += round_ratios(path, rows, args.benchmark, attention, args.against)
    ci = median_ci95(ratios)
    interval = '' if ci is None else ' [{:+.1f}, {:+.1f}]'.format(*(100 * x for x in ci))
    print(f'{args.benchmark} + {attention} vs {args.against}: {100 * statistics.median(ratios):+.1f}%{interval} '
          f'over {len(ratios)} rounds of {len(args.files)} runs')
  return 0


if __name__ == '__main__':
  sys.exit(runner.run(main))
