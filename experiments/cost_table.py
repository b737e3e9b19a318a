"""What each attention costs the paper's networks: parameters, GFLOPs and measured train-step time.

    python experiments/cost_table.py
        [--networks=resnet18,resnet50,resnet101,cifar_resnet56,cifar_resnet164,msrresnet_x4]
        [--attentions=none,pfca,se,eca,simam] [--batch_size=16] [--rounds=3] [--out=experiments/results/cost]

Parameters and forward GFLOPs (one example, XLA cost analysis of the reference formulation:
pfca_jax.models.summary) at the input the paper quotes: 224x224 for the ImageNet ResNets, 32x32 for
the CIFAR ResNets, a 64x64 low-resolution input for MSRResNet x4. Train-step time is the trainer's
own jitted step (pfca_jax.bench.Entry: optimiser, loss and sharding of the configs) at that input
and --batch_size, median over --rounds interleaved rounds of one network's attentions, so each
network's attentions share the machine's drifts. Writes OUT.md (with the command and the machine)
and OUT.json.
"""

import datetime
import json
import os
import shlex
import statistics
import sys

if __name__ == '__main__':
  from pfca_jax.cli import cpu_settings
  cpu_settings.apply()  # Before JAX: see pfca_jax/cli/cpu_settings.py.


from pfca_jax.bench import timing  # noqa: E402
from pfca_jax.train import sharding
from pfca_jax.errors import UserError  # noqa: E402
from pfca_jax.models import summary  # noqa: E402
from pfca_jax.models.attention import ATTENTIONS  # noqa: E402
from pfca_jax.cli import runner  # noqa: E402

# The input sides the paper's tables use; MSRResNet's is its low-resolution input.
SIDES = {'resnet18': 224, 'resnet50': 224, 'resnet101': 224, 'cifar_resnet20': 32, 'cifar_resnet56': 32,
         'cifar_resnet164': 32, 'msrresnet_x4': 64}
DEFAULT_NETWORKS = 'resnet18,resnet50,resnet101,cifar_resnet56,cifar_resnet164,msrresnet_x4'


def measure(network: str, attentions: list[str], batch_size: int, rounds: int, log) -> list[dict]:
  """One row per attention: params, GFLOPs, median step time (min-max) and growth over `none`."""
  entries = []
  for attention in attentions:
    entry = timing.Entry(network, attention, batch_size, 'auto', 'float32', side=SIDES[network])
    entry.compile()
    log(f'compiled {entry.name} at {entry.side}x{entry.side} in {entry.compile_s:.1f}s')
    entries.append(entry)
  timing.time_rounds(entries, rounds, 1, log)
  rows = []
  for entry in entries:
    cost = summary.summarize(entry.model, (1, entry.side, entry.side, 3))
    rows.append({'network': network, 'attention': entry.attention, 'input': f'{entry.side}x{entry.side}',
                 'params': cost['params'], 'flops': cost['flops'], 'batch': batch_size,
                 'step_s': statistics.median(entry.times), 'step_s_min': min(entry.times),
                 'step_s_max': max(entry.times)})
  base = next((r for r in rows if r['attention'] == 'none'), None)
  for row in rows:
    if base:
      row.update(params_added=row['params'] - base['params'], flops_growth=row['flops'] / base['flops'] - 1,
                 step_growth=row['step_s'] / base['step_s'] - 1)
  return rows


def format_markdown(rows: list[dict]) -> str:
  lines = ['| network | input | attention | params | vs none | GFLOPs | vs none | s/step (min-max) | vs none |',
           '|---|---|---|---|---|---|---|---|---|']
  for r in rows:
    first = 'params_added' not in r or r['attention'] == 'none'
    lines.append(
        f'| {r["network"]} | {r["input"]} | {r["attention"]} | {r["params"]:,} | '
        f'{"" if first else format(r["params_added"], "+,")} | {r["flops"] / 1e9:.4f} | '
        f'{"" if first else format(100 * r["flops_growth"], "+.2f") + "%"} | '
        f'{r["step_s"]:.3f} ({r["step_s_min"]:.3f}-{r["step_s_max"]:.3f}) | '
        f'{"" if first else format(100 * r["step_growth"], "+.1f") + "%"} |')
  return '\n'.join(lines)


def main(argv=None) -> int:
  parser = runner.Parser(prog='python experiments/cost_table.py', description=__doc__.split('\n')[0])
  parser.add_argument('--networks', default=DEFAULT_NETWORKS)
  parser.add_argument('--attentions', default='none,pfca,se,eca,simam')
  parser.add_argument('--batch_size', type=int, default=16)
  parser.add_argument('--rounds', type=int, default=3)
  parser.add_argument('--out', default=os.path.join(os.path.dirname(os.path.abspath(__file__)), 'results', 'cost'))
  args = parser.parse_args(argv)
  try:
    networks = timing.parse_names(args.networks, SIDES, 'networks')
    attentions = timing.parse_names(args.attentions, ATTENTIONS, 'attentions')
    if args.batch_size < 1 or args.rounds < 1:
      raise UserError(f'--batch_size={args.batch_size} and --rounds={args.rounds} must be >= 1')
    sharding.check_batch_size('--batch_size', args.batch_size)
    timing.check_writable('--out', args.out + '.md')
  except UserError as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  log = lambda text: print(text, file=sys.stderr, flush=True)
  rows = []
  for network in networks:
    rows += measure(network, attentions, args.batch_size, args.rounds, log)
  machine = timing.machine()
  command = shlex.join(['python', 'experiments/cost_table.py'] + (sys.argv[1:] if argv is None else list(argv)))
  text = '\n'.join([
      '# What each attention costs: parameters, FLOPs and train-step time',
      '', f'Command: `{command}`', f'Machine: {machine}; written {datetime.date.today().isoformat()}.',
      f'Batch {args.batch_size}, float32; step times are medians over {args.rounds} interleaved rounds '
      '(min-max in brackets). GFLOPs: forward, one example, XLA cost analysis (1 multiply-add = 2 FLOPs).',
      '', format_markdown(rows)])
  print(text)
  with open(args.out + '.md', 'w') as f:
    f.write(text + '\n')
  with open(args.out + '.json', 'w') as f:
    json.dump({'machine': machine, 'command': command, 'rows': rows}, f, indent=2)
  log(f'written: {args.out}.md, {args.out}.json')
  return 0


if __name__ == '__main__':
  sys.exit(runner.run(main))
