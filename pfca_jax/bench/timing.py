"""Training-step throughput of the paper's networks per attention, side by side: a benchmark, not a test.

    python -m pfca_jax.bench [--benchmarks=resnet50,cifar_resnet56,cifar_resnet164,msrresnet_x4]
        [--attentions=none,pfca,se,eca,simam] [--batch_size=16] [--rounds=5] [--steps=2] [--round_seconds=0]
        [--attention_impl=fast|reference] [--conv_impl=auto|xla|matmul] [--dtype=float32|bfloat16] [--torch=auto|off]
        [--torch_layouts=auto|nchw,channels_last] [--pipelines]
        [--json=bench.json]

Each entry is the trainer's own jitted step (pfca_jax.train.steps.make_train_step, the configs' optimiser,
loss and sharding over every device) on a fixed random batch. Entries are compiled first (compile
time, XLA's planned peak memory, its count of bytes read and written per step and the number of
operations the optimised step runs, reported apart), then timed in interleaved rounds: every round
runs `--steps` steps of each entry in turn (or, with `--round_seconds S`, as many more as fill about S
seconds, sized per entry from a first timed step: a short CIFAR step timed once per round is at the
mercy of the host's jitter), every other round in reverse order, so slow drifts of the machine and
the effects of the entry run just before hit all entries alike. The
table gives the median step time with min-max over rounds, images (or patches) per second, and the
step-time overhead over `none` of the same network in the same run, twice: as the ratio of the
medians, and paired (the median of the rounds' own ratios, with a 95% interval: where it spans
zero, or another attention's figure, the difference is not resolved by this run). When PyTorch is importable, its
references (torchvision resnet50, timm seresnet50, BasicSR's MSRResNet, eager; on the CPU in both NCHW
and channels_last unless `--torch_layouts` says which) join the same rounds (pfca_jax/bench/torch_reference.py).
`--pipelines` adds the input pipelines' examples/s for the datasets that are available offline or
prepared.
"""

import json
import math
import os
import platform
import re
import statistics
import sys
import time

import jax
import numpy as np

from pfca_jax.bench import torch_reference
from pfca_jax.cli import cpu_settings, runner
from pfca_jax.errors import UserError
from pfca_jax.models.attention import ATTENTIONS
from pfca_jax.models.fast.conv import CONV_IMPLS
from pfca_jax.models.layers import ATTENTION_IMPLS
from pfca_jax.tasks.losses import l1_loss, train_loss
from pfca_jax.train import config_defaults, optim, sharding, steps, train_state
from pfca_jax.models.from_config import create_model

# name -> (config factory, input side, task input key); the configs are the training recipes.
BENCHMARKS = {
    'resnet18': (lambda: _imagenet('resnet18'), 224, 'image'),
    'resnet34': (lambda: _imagenet('resnet34'), 224, 'image'),
    'resnet50': (lambda: _imagenet('resnet50'), 224, 'image'),
    'resnet101': (lambda: _imagenet('resnet101'), 224, 'image'),
    'cifar_resnet20': (lambda: _cifar('cifar_resnet20'), 32, 'image'),
    'cifar_resnet56': (lambda: _cifar('cifar_resnet56'), 32, 'image'),
    'cifar_resnet110': (lambda: _cifar('cifar_resnet110'), 32, 'image'),
    'cifar_resnet164': (lambda: _cifar('cifar_resnet164'), 32, 'image'),
    'msrresnet_x4': (lambda: config_defaults.super_resolution(4), 32, 'lr'),
}
DEFAULT_BENCHMARKS = 'resnet50,cifar_resnet56,cifar_resnet164,msrresnet_x4'


def min_side(benchmark: str) -> int:
  """The smallest input side the network takes: its total stride (MSRResNet's body keeps the LR side)."""
  _, default_side, input_key = BENCHMARKS[benchmark]
  if input_key == 'lr':
    return 1
  return 32 if default_side == 224 else 4  # The ImageNet stem and stages stride 32 in all, CIFAR's 4.


def _imagenet(name):
  config = config_defaults.imagenet()
  config.model.name = name
  return config


def _cifar(name):
  config = config_defaults.classification()
  config.model.name = name
  return config


class Entry:
  """One jitted train step of one network with one attention, ready to time."""

  def __init__(self, benchmark: str, attention: str, batch_size: int, conv_impl: str, dtype: str,
               side: int | None = None, attention_impl: str = 'fast'):
    make_config, default_side, self.input_key = BENCHMARKS[benchmark]
    side = side or default_side
    config = make_config()
    config.model.attention = attention
    config.model.dtype = dtype
    config.model.conv_impl = conv_impl
    config.model.attention_impl = attention_impl
    self.benchmark, self.attention, self.batch = benchmark, attention, batch_size
    self.name = f'{benchmark} + {attention}'
    is_sr = config.task == 'super_resolution'
    extra = {'scale': config.scale} if is_sr else {'num_classes': 1000 if config.dataset == 'imagenet2012' else 100}
    model = create_model(config, **extra)
    self.model, self.side = model, side
    mesh = sharding.create_mesh()
    schedule = optim.create_schedule(config, steps_per_epoch=1000, total_steps=10 ** 6)
    tx = optim.create_optimizer(config, schedule)
    shape = (batch_size, side, side, 3)
    _, shardings = train_state.abstract_state(model, tx, (1,) + shape[1:], 0, mesh)
    self.state = train_state.create_state(model, tx, (1,) + shape[1:], 0, shardings)
    rng = np.random.default_rng(0)
    if is_sr:
      batch = {'lr': rng.random(shape, np.float32), 'hr': rng.random((batch_size, side * 4, side * 4, 3), np.float32)}
      loss = l1_loss
    else:
      batch = {'image': rng.standard_normal(shape, np.float32),
               'label': rng.integers(0, extra['num_classes'], batch_size).astype(np.int32)}
      loss = lambda outputs, b: train_loss(outputs, b, 0.0)
    self.batch_data = jax.device_put(batch, sharding.batch_sharded(mesh))
    self.step = steps.make_train_step(loss, schedule, shardings, mesh, input_key=self.input_key)
    self.params = sum(x.size for x in jax.tree.leaves(self.state.params))

  def compile(self) -> None:
    t0 = time.perf_counter()
    compiled = self.step.lower(self.state, self.batch_data).compile()
    self.compile_s = time.perf_counter() - t0
    memory = compiled.memory_analysis()
    self.peak_bytes = None if memory is None else int(
        memory.temp_size_in_bytes + memory.argument_size_in_bytes + memory.output_size_in_bytes
        - memory.alias_size_in_bytes)
    # XLA's own count of the bytes the step's operations read and write: deterministic, so it shows
    # what an attention adds to the memory traffic where the host's timing noise hides a few percent.
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    self.bytes_accessed = (cost or {}).get('bytes accessed')
    self.hlo_text = compiled.as_text()  # Also read by experiments/step_profile.py.
    self.hlo_ops = count_step_ops(self.hlo_text)
    self.state, metrics = self.step(self.state, self.batch_data)  # Warm-up (first-run allocations).
    jax.block_until_ready(metrics)

  def run(self, n: int) -> float:
    """Seconds per step over n steps, after one untimed step.

    The untimed step takes the cost of switching programs (caches, freed and re-faulted buffers of
    the previous entry), which timed would land on whichever entry follows a large one
    (experiments/results/speed.md, "Untimed step, passive OpenMP").
    """
    self.state, metrics = self.step(self.state, self.batch_data)
    jax.block_until_ready(metrics)
    t0 = time.perf_counter()
    for _ in range(n):
      self.state, metrics = self.step(self.state, self.batch_data)
    jax.block_until_ready((self.state.params, metrics))
    return (time.perf_counter() - t0) / n


# Instructions that only name, regroup or reinterpret buffers: they run no code.
_FREE_OPCODES = frozenset({'parameter', 'constant', 'get-tuple-element', 'tuple', 'bitcast'})
_INSTRUCTION = re.compile(r'^\s*(?:ROOT\s+)?%?([\w.\-]+) = (?:\([^=]*?\)|\S+) ([a-z][\w-]*)\(')


def entry_instructions(hlo_text: str) -> list[tuple[str, str, str]]:
  """(name, opcode, line) of each instruction of the optimised step's entry computation, in order."""
  entry = hlo_text[hlo_text.index('\nENTRY '):]
  body = entry[:entry.index('\n}')].split('\n')[1:]
  return [(m.group(1), m.group(2), line) for line in body for m in [_INSTRUCTION.match(line)] if m]


def count_step_ops(hlo_text: str) -> int:
  """How many operations the optimised step runs at its top level (a loop or conditional counts once).

  Each is a separate step of XLA's CPU runtime (or a kernel launch on a GPU), with a fixed cost of a
  few microseconds whatever its size: an attention's small (N, C) operations cost that, not bandwidth,
  and the byte count does not see them. Deterministic, like the byte count.
  """
  return sum(opcode not in _FREE_OPCODES for _, opcode, _ in entry_instructions(hlo_text))


def time_rounds(entries: list, rounds: int, steps_per_round: int, log=print, round_seconds: float = 0.0) -> None:
  """Interleaved rounds; each entry gets `.times` (seconds per step, one per round) and `.steps`.

  Every entry runs at least `steps_per_round` steps a round, and enough to fill `round_seconds` at the
  step time of one first run (untimed for the results).
  """
  for entry in entries:
    entry.times = []
    entry.steps = steps_per_round
    if round_seconds > 0:
      entry.steps = max(steps_per_round, math.ceil(round_seconds / entry.run(1)))
  for r in range(rounds):
    # Every other round in reverse order, so that no entry always runs right after the same one (in
    # fixed order, the entry after `none` of the same network came out slower in full runs).
    for entry in (entries if r % 2 == 0 else entries[::-1]):
      entry.times.append(entry.run(entry.steps))
    log(f'round {r + 1}/{rounds}: ' + ', '.join(f'{e.name} {e.times[-1]:.3f}s' for e in entries))


def median_ci95(values: list[float]) -> tuple[float, float] | None:
  """A distribution-free 95% confidence interval of the median: order statistics k and n + 1 - k.

  k is the largest with P(Binomial(n, 1/2) < k) <= 2.5%, so the interval covers the true median with
  at least 95% probability whatever the distribution (bursts of host noise included). None below
  6 values, where no such k exists.
  """
  n, ordered = len(values), sorted(values)
  k, below = 0, 0.0
  while below + math.comb(n, k) / 2 ** n <= 0.025:
    below += math.comb(n, k) / 2 ** n
    k += 1
  return None if k == 0 else (ordered[k - 1], ordered[n - k])


def paired_ratios(times: list[float], base_times: list[float]) -> list[float]:
  """Each round's step time over the base entry's in the same round, minus 1: the paired overheads."""
  return [t / t0 - 1 for t, t0 in zip(times, base_times)]


def summarize(entries: list) -> list[dict]:
  """Rows of figures per entry; overheads are against the JAX `none` entry of the same network.

  `overhead_vs_none` is the ratio of the two medians. `paired_overhead_vs_none` is the median over
  rounds of each round's ratio, with its 95% interval (`median_ci95`): the two steps of a round run
  close together, so slow drifts of the host cancel in the ratio and its spread shows what is a tie.
  """
  rows = []
  for e in entries:
    median = statistics.median(e.times)
    rows.append({'name': e.name, 'benchmark': e.benchmark, 'attention': e.attention, 'batch': e.batch,
                 'side': getattr(e, 'side', None),
                 'step_s_median': median, 'step_s_min': min(e.times), 'step_s_max': max(e.times),
                 'step_s_rounds': list(e.times),
                 'examples_per_s': e.batch / median, 'compile_s': getattr(e, 'compile_s', None),
                 'peak_bytes': getattr(e, 'peak_bytes', None),
                 'bytes_accessed': getattr(e, 'bytes_accessed', None), 'hlo_ops': getattr(e, 'hlo_ops', None),
                 'params': getattr(e, 'params', None),
                 'steps_per_round': getattr(e, 'steps', None),
                 'framework': getattr(e, 'framework', 'jax')})
  base = {r['benchmark']: r for r in rows if r['attention'] == 'none' and r['framework'] == 'jax'}
  for r in rows:
    b = base.get(r['benchmark'])
    r['overhead_vs_none'] = r['step_s_median'] / b['step_s_median'] - 1 if b else None
    ratios = paired_ratios(r['step_s_rounds'], b['step_s_rounds']) if b else []
    r['paired_overhead_vs_none'] = statistics.median(ratios) if ratios else None
    r['paired_ci95'] = median_ci95(ratios) if ratios else None
  return rows


def format_table(rows: list[dict]) -> str:
  header = (f'{"step":<48} {"batch":>5} {"ms/step (min-max)":>26} {"ex/s":>9} {"vs none":>8} '
            f'{"paired [95% CI]":>23} {"compile":>8} {"peak MB":>8} {"GB r/w":>7} {"ops":>6}')
  ms = lambda s: f'{1e3 * s:.1f}' if s >= 0.01 else f'{1e3 * s:.3f}'  # GPU steps take milliseconds.
  lines = [header, '-' * len(header)]
  for r in rows:
    spread = f'{ms(r["step_s_median"])} ({ms(r["step_s_min"])}-{ms(r["step_s_max"])})'
    overhead = '' if r['overhead_vs_none'] is None else f'{100 * r["overhead_vs_none"]:+.1f}%'
    paired = '' if r['paired_overhead_vs_none'] is None else f'{100 * r["paired_overhead_vs_none"]:+.1f}%'
    if r['paired_ci95'] is not None:
      paired += ' [{:+.1f}, {:+.1f}]'.format(*(100 * x for x in r['paired_ci95']))
    compile_s = '' if r['compile_s'] is None else f'{r["compile_s"]:.1f}s'
    peak = '' if r['peak_bytes'] is None else f'{r["peak_bytes"] / 2 ** 20:,.0f}'
    traffic = '' if r.get('bytes_accessed') is None else f'{r["bytes_accessed"] / 1e9:.2f}'
    ops = '' if r.get('hlo_ops') is None else str(r['hlo_ops'])
    lines.append(f'{r["name"]:<48} {r["batch"]:>5} {spread:>26} {r["examples_per_s"]:>9.1f} {overhead:>8} '
                 f'{paired:>23} {compile_s:>8} {peak:>8} {traffic:>7} {ops:>6}')
  return '\n'.join(lines)


def cpu_model() -> str:
  """The CPU's model name (Linux's /proc/cpuinfo), else what Python's platform module knows."""
  cpu = platform.processor() or platform.machine()
  try:
    with open('/proc/cpuinfo') as f:
      return next((line.split(':', 1)[1].strip() for line in f if line.startswith('model name')), cpu)
  except OSError:
    return cpu


def machine() -> str:
  """What the figures were measured on: CPU model and cores, accelerators, jax version, huge pages."""
  cpu = cpu_model()
  device = jax.devices()[0]
  pages = 'on' if cpu_settings.huge_pages_enabled() else 'off'
  return (f'{cpu}, {os.cpu_count()} CPU cores; {jax.device_count()} x {device.device_kind} '
          f'({jax.default_backend()}); jax {jax.__version__}; host buffers on huge pages: {pages}; '
          f'allocator: {cpu_settings.allocator()}')


def check_writable(flag: str, path: str) -> None:
  """Before any compilation: the folder a result file goes to must exist and be writable."""
  folder = os.path.dirname(os.path.abspath(path))
  if not os.access(folder, os.W_OK):
    raise UserError(f'{flag}={path}: folder {folder} is not writable')


def check_timing_args(args) -> None:
  """--batch_size, --rounds, --steps and --json of a timing command, before anything compiles."""
  if args.batch_size < 1 or args.rounds < 1 or args.steps < 1:
    raise UserError('--batch_size, --rounds and --steps must be >= 1')
  if getattr(args, 'round_seconds', 0) < 0:
    raise UserError(f'--round_seconds={args.round_seconds} must be >= 0 (0: exactly --steps steps a round)')
  sharding.check_batch_size('--batch_size', args.batch_size)
  if args.json:
    check_writable('--json', args.json)


def check_side(side: int | None, benchmarks: list[str]) -> None:
  for benchmark in benchmarks if side is not None else ():
    if side < min_side(benchmark):
      raise UserError(f'--side={side} is below what {benchmark} takes: at least {min_side(benchmark)}')


def parse_names(text: str, valid, what: str) -> list[str]:
  names = [n.strip() for n in text.split(',') if n.strip()]
  bad = [n for n in names if n not in valid]
  if bad or not names:
    raise UserError(f'--{what}={text!r}: {", ".join(bad) or "empty"}; valid: {", ".join(valid)}')
  return names


def parser() -> runner.Parser:
  p = runner.Parser('python -m pfca_jax.bench', __doc__.split('\n\n')[0],
                    renamed={'--attention': 'use --attentions=NAME[,NAME...]',
                             '--benchmark': 'use --benchmarks=NAME[,NAME...]'})
  p.add_argument('--benchmarks', default=DEFAULT_BENCHMARKS, help=f'comma-separated; valid: {", ".join(BENCHMARKS)}')
  p.add_argument('--attentions', default='none,pfca,se', help=f'comma-separated; valid: {", ".join(ATTENTIONS)}')
  p.add_argument('--batch_size', type=int, default=16)
  p.add_argument('--rounds', type=int, default=5)
  p.add_argument('--steps', type=int, default=2, help='steps per entry per round (at least)')
  p.add_argument('--round_seconds', type=float, default=0.0,
                 help='more steps per round for fast entries: about this many seconds each')
  p.add_argument('--attention_impl', default='fast', choices=ATTENTION_IMPLS,
                 help='the layers the networks are built from (pfca_jax/models/layers.py)')
  p.add_argument('--conv_impl', default='auto', choices=CONV_IMPLS)
  p.add_argument('--dtype', default='float32', choices=('float32', 'bfloat16'))
  p.add_argument('--torch', default='auto', choices=('auto', 'off'))
  p.add_argument('--torch_layouts', default='auto',
                 help='PyTorch memory formats to time: auto (CPU both, GPU channels_last) or a list of '
                      + ','.join(torch_reference.LAYOUTS))
  p.add_argument('--side', type=int, default=None,
                 help="input side in pixels for every benchmark (MSRResNet's LR side); default each "
                      "benchmark's own: 224 for ImageNet ResNets, 32 for the others")
  p.add_argument('--pipelines', action='store_true', help="also the input pipelines' examples/s")
  p.add_argument('--json', default=None, help='also write the results as JSON to this file')
  return p


def parse_args(argv=None):
  """The checked flags, every mistake a UserError before anything compiles."""
  args = parser().parse_args(argv)
  args.benchmarks = parse_names(args.benchmarks, BENCHMARKS, 'benchmarks')
  args.attentions = parse_names(args.attentions, ATTENTIONS, 'attentions')
  check_timing_args(args)
  check_side(args.side, args.benchmarks)
  args.torch_layouts = (None if args.torch_layouts == 'auto' else
                        parse_names(args.torch_layouts, torch_reference.LAYOUTS, 'torch_layouts'))
  return args


def main(argv=None) -> int:
  """The command's exit status: 0, or 2 after one `error: ...` line (also when called from Python)."""
  return runner.run(lambda argv: measure(parse_args(argv)), argv)


def measure(args) -> None:
  """Compiles, times and reports the entries of checked flags (parse_args)."""
  benchmarks, attentions, layouts = args.benchmarks, args.attentions, args.torch_layouts
  log = lambda text: print(text, file=sys.stderr, flush=True)
  log(f'pfca_jax.bench on {machine()}')
  entries = []
  for benchmark in benchmarks:
    for attention in attentions:
      entry = Entry(benchmark, attention, args.batch_size, args.conv_impl, args.dtype, side=args.side,
                    attention_impl=args.attention_impl)
      entry.compile()
      log(f'compiled {entry.name} in {entry.compile_s:.1f}s')
      entries.append(entry)
  if args.torch == 'auto':
    entries += torch_reference.entries(benchmarks, args.batch_size, log, args.dtype, layouts, args.side)
  time_rounds(entries, args.rounds, args.steps, log, args.round_seconds)
  rows = summarize(entries)
  result = {'machine': machine(), 'jax': jax.__version__, 'attention_impl': args.attention_impl,
            'conv_impl': args.conv_impl, 'dtype': args.dtype,
            'rounds': args.rounds, 'steps_per_round': args.steps, 'round_seconds': args.round_seconds,
            'rows': rows}
  print(format_table(rows))
  if args.pipelines:
    from pfca_jax.bench import pipelines
    result['pipelines'] = pipelines.measure(args.batch_size, log)
    print(pipelines.format_table(result['pipelines']))
  if args.json:
    with open(args.json, 'w') as f:
      json.dump(result, f, indent=2)
    log(f'written: {args.json}')

