"""Where a train step's time goes, per attention: the step's operations timed by JAX's profiler.

    python experiments/step_profile.py --benchmark=msrresnet_x4 --attentions=none,pfca,se --rounds=16
        [--batch_size=16] [--side=N] [--top=12] [--json=F]

Whole-step A/B timing (`python -m pfca_jax.bench`) on the 2-core CPU resolves an overhead to several
points per run: the host's speed moves by 10-15% from step to step, in CPU time as much as in wall
time, and the convolutions, most of a step, carry that noise. The profiler times each operation of
the compiled step apart (a thunk of XLA's CPU runtime: a fusion, a reduction, a matrix product). The
ones that hold an operation of a module named `attention`, or of the BatchNorm that ends a ResNet
block, where PFCA is fused in (Flax's named scopes put the module path into each operation's
metadata; `--scope` is that regex), are the attention's and its baseline's. Their time, over `none`'s
(which has the same BatchNorms, and in MSRResNet adds conv2's bias in the attention's scope), in each
round as a share of `none`'s step, is what the attention's own operations cost, without the noise of
the rest of the step.

Read it as an upper bound on that work: a thunk counts whole if any of its operations is the
attention's (PFCA's output gradient, for one, is fused into the transposed copy that conv2's weight
gradient makes of it, a copy `none` makes too). What an attention costs elsewhere (caches its passes
evict) is not in it. Work a thunk hands to the runtime's thread pool (the convolutions) is outside
its event, and thunks that run at once on two cores overlap, so the timed thunks' sum (the table's
share of the step) is not the step. Each round, per entry and in the benchmark's interleaved order,
runs `timing.Entry.run(1)` (the benchmark's untimed step and one timed step, both unprofiled), then one
profiled step.
"""

import collections
import glob
import gzip
import json
import os
import re
import statistics
import sys
import tempfile
import time

if __name__ == '__main__':
  from pfca_jax.cli import cpu_settings
  cpu_settings.apply()  # As the trainer and the benchmark run; before JAX starts.

from pfca_jax.bench import timing
from pfca_jax.errors import UserError

import jax  # noqa: E402
from pfca_jax.cli import runner  # noqa: E402

# The attention modules, and the BatchNorm each ResNet block ends with (bn2 in a basic block, bn3 in a
# bottleneck), which PFCA is fused into there (models/fast/batchnorm.py). A bottleneck's middle bn2 is in too:
# it is the same for every attention, so it cancels in the difference to `none`.
SCOPE = r'/(attention|bn2|bn3)/'
_COMPUTATION = re.compile(r'\n(?=(?:ENTRY )?%[\w.\-]+ \()')
_OP_NAME = re.compile(r'op_name="([^"]*)"')
_CALLS = re.compile(r'(?:calls|to_apply)=%?([\w.\-]+)')


def scoped_operations(hlo_text: str, scope: str = SCOPE) -> set[str]:
  """Names of the optimised step's top-level operations that hold an operation from `scope` (a regex).

  An operation holds it if its own metadata names the scope, or that of a computation it calls (a
  fusion's body, a reduction's combiner), one level down: the thunks the runtime runs are these.
  """
  computations = {}
  for text in _COMPUTATION.split(hlo_text):
    head = text.split(' ', 2)
    computations[(head[1] if head[0] == 'ENTRY' else head[0]).lstrip('%')] = text
  pattern = re.compile(scope)
  scoped = set()
  for name, _, line in timing.entry_instructions(hlo_text):
    text = line + ''.join(computations.get(c, '') for c in _CALLS.findall(line))
    if any(pattern.search(n) for n in _OP_NAME.findall(text)):
      scoped.add(name)
  return scoped


def thunk_times(trace_dir: str, names: set[str]) -> dict[str, float]:
  """Seconds per operation in the profiler's trace under `trace_dir`, for the operations in `names`."""
  found = glob.glob(os.path.join(trace_dir, '**', '*perfetto_trace.json.gz'), recursive=True)
  if not found:
    raise RuntimeError(f'the profiler wrote no perfetto trace under {trace_dir}')
  with gzip.open(found[0]) as f:
    events = json.load(f)
  events = events['traceEvents'] if isinstance(events, dict) else events
  times = collections.defaultdict(float)
  for event in events:
    if event.get('ph') == 'X' and event.get('name') in names:
      times[event['name']] += event['dur'] * 1e-6
  return dict(times)


def kind(name: str) -> str:
  """An operation's kind: its name without the number XLA appends (`ynn_fusion.76` -> `ynn_fusion`)."""
  return re.sub(r'\.\d+$', '', name)


class Profiled:
  """A bench entry with the names of its step's operations, all and the attention's."""

  def __init__(self, entry: timing.Entry, scope: str = SCOPE):
    self.entry = entry
    hlo = entry.hlo_text  # Of the compiled step (timing.Entry.compile).
    self.scoped = scoped_operations(hlo, scope)
    self.operations = {name for name, _, _ in timing.entry_instructions(hlo)}
    self.rounds = []  # (step seconds, {operation: seconds}) per round.

  def profile_step(self, workdir: str) -> None:
    e = self.entry
    e.run(1)  # Unprofiled, as a benchmark round: the switch from the previous entry lands here.
    trace_dir = tempfile.mkdtemp(dir=workdir)
    with jax.profiler.trace(trace_dir, create_perfetto_trace=True):
      t0 = time.perf_counter()
      e.state, metrics = e.step(e.state, e.batch_data)
      jax.block_until_ready((e.state.params, metrics))
      seconds = time.perf_counter() - t0
    self.rounds.append((seconds, thunk_times(trace_dir, self.operations)))

  def seconds(self, keep) -> list[float]:
    """Per round, the seconds of the operations for which keep(name) is true."""
    return [sum(t for op, t in times.items() if keep(op)) for _, times in self.rounds]


def summarize(profiled: dict[str, Profiled]) -> list[dict]:
  """A row per attention: per-round step, timed and in-scope seconds and the kinds' medians, paired
  with `none`'s (pair_with_none)."""
  rows = []
  for name, p in profiled.items():
    rows.append({'attention': name, 'step_s_rounds': [s for s, _ in p.rounds],
                 'scoped_s_rounds': p.seconds(lambda op: op in p.scoped),
                 'timed_s_rounds': p.seconds(lambda op: True), 'scoped_operations': len(p.scoped),
                 'kinds_s': {k: statistics.median(p.seconds(lambda op: kind(op) == k))
                             for k in {kind(op) for _, times in p.rounds for op in times}}})
  return pair_with_none(rows)


def pair_with_none(rows: list[dict]) -> list[dict]:
  """Adds to each row but `none`'s, from the rounds' figures: its own work (in-scope seconds over
  `none`'s, as a share of `none`'s step) and its whole step over `none`'s, per round and as a median
  with a 95% interval."""
  base = next((r for r in rows if r['attention'] == 'none'), None)
  for row in rows:
    if base is None or row is base:
      continue
    own = [(s - s0) / b for s, s0, b in zip(row['scoped_s_rounds'], base['scoped_s_rounds'], base['step_s_rounds'])]
    whole = timing.paired_ratios(row['step_s_rounds'], base['step_s_rounds'])
    row.update(own_share_rounds=own, own_share_median=statistics.median(own), own_share_ci95=timing.median_ci95(own),
               step_paired_median=statistics.median(whole), step_paired_ci95=timing.median_ci95(whole))
  return rows


def format_report(rows: list[dict], top: int) -> str:
  def ms(values):
    return f'{statistics.median(values) * 1e3:8.1f} ({min(values) * 1e3:.1f}-{max(values) * 1e3:.1f})'

  def paired(median, ci):
    return f'{median:+.2%}' + (f' [{ci[0]:+.2%}, {ci[1]:+.2%}]' if ci else '')

  lines = [f'{"attention":10s} {"step ms (min-max)":>26s} {"timed share":>11s} {"its own ops ms (min-max)":>26s}'
           f' {"ops":>5s}  own work over none, % of none\'s step [95%]; the whole step over none, paired']
  for r in rows:
    share = statistics.median(t / s for t, s in zip(r['timed_s_rounds'], r['step_s_rounds']))
    own = ''
    if 'own_share_median' in r:
      own = (paired(r['own_share_median'], r['own_share_ci95']) + '; '
             + paired(r['step_paired_median'], r['step_paired_ci95']))
    lines.append(f'{r["attention"]:10s} {ms(r["step_s_rounds"]):>26s} {share:>11.0%} {ms(r["scoped_s_rounds"]):>26s}'
                 f' {r["scoped_operations"]:5d}  {own}')
  with_own = [r for r in rows if 'own_share_rounds' in r]
  for i, a in enumerate(with_own):
    for b in with_own[i + 1:]:
      diff = [x - y for x, y in zip(a['own_share_rounds'], b['own_share_rounds'])]
      lines.append(f'{a["attention"]} against {b["attention"]}: own work '
                   f'{paired(statistics.median(diff), timing.median_ci95(diff))} of none\'s step, paired by round')
  kinds = sorted({k for r in rows for k in r['kinds_s']}, key=lambda k: -max(r['kinds_s'].get(k, 0) for r in rows))
  lines += ['', 'ms per step by operation kind (medians over rounds):',
            f'{"kind":32s}' + ''.join(f'{r["attention"]:>10s}' for r in rows)]
  for k in kinds[:top]:
    lines.append(f'{k[:32]:32s}' + ''.join(f'{r["kinds_s"].get(k, 0) * 1e3:10.1f}' for r in rows))
  return '\n'.join(lines)


def main(argv=None) -> int:
  parser = runner.Parser(description=__doc__.split('\n')[0])
  parser.add_argument('--benchmark', default='msrresnet_x4', help=', '.join(timing.BENCHMARKS))
  parser.add_argument('--attentions', default='none,pfca,se')
  parser.add_argument('--rounds', type=int, default=16)
  parser.add_argument('--batch_size', type=int, default=16)
  parser.add_argument('--side', type=int, default=None)
  parser.add_argument('--scope', default=SCOPE, help='regex of the module paths counted as the attention')
  parser.add_argument('--top', type=int, default=12, help='operation kinds listed')
  parser.add_argument('--json', default=None)
  parser.set_defaults(steps=1)  # One profiled step per entry and round (timing.check_timing_args reads it).
  args = parser.parse_args(argv)
  try:
    benchmarks = timing.parse_names(args.benchmark, timing.BENCHMARKS, 'benchmark')
    if len(benchmarks) != 1:
      raise UserError(f'--benchmark={args.benchmark!r}: one benchmark a run, of {", ".join(timing.BENCHMARKS)}')
    benchmark = benchmarks[0]
    attentions = timing.parse_names(args.attentions, timing.ATTENTIONS, 'attentions')
    timing.check_timing_args(args)
    timing.check_side(args.side, [benchmark])
    try:
      re.compile(args.scope)
    except re.error as e:
      raise UserError(f'--scope={args.scope!r} is not a regular expression ({e})')
  except UserError as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  profiled = {}
  for a in attentions:
    entry = timing.Entry(benchmark, a, args.batch_size, 'auto', 'float32', side=args.side)
    entry.compile()
    profiled[a] = Profiled(entry, args.scope)
  with tempfile.TemporaryDirectory() as workdir:
    for r in range(args.rounds):
      for p in (list(profiled.values()) if r % 2 == 0 else list(profiled.values())[::-1]):
        p.profile_step(workdir)
      print(f'round {r + 1}/{args.rounds}: ' + ', '.join(f'{a} {p.rounds[-1][0]:.3f}s' for a, p in profiled.items()),
            flush=True)
  rows, machine = summarize(profiled), timing.machine()
  print(f'{benchmark}, batch {args.batch_size}, {args.rounds} profiled steps per attention; {machine}')
  print(format_report(rows, args.top))
  if args.json:
    with open(args.json, 'w') as f:
      json.dump({'benchmark': benchmark, 'batch': args.batch_size, 'side': args.side, 'machine': machine,
                 'rows': rows}, f, indent=1)
  return 0


if __name__ == '__main__':
  sys.exit(runner.run(main))
