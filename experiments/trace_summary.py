"""What a training profile (`--config.profile_steps=START:END`) shows for each step, without a viewer.

    python experiments/trace_summary.py --workdir=WORKDIR [--top=8]

Reads the newest WORKDIR/plugins/profile/<date>/perfetto_trace.json.gz (what ui.perfetto.dev opens) and
prints, per traced step: how long the host took to dispatch it (the `train` step annotation the trainer
puts around each traced step), and the execution of the train-step program that followed (XLA module
`jit_step`, one `run_id` per execution): its span from its first operation's start to its last one's
end, and its operations' time summed by kind (convolution, fusion, copy, ...), the longest first. The
operations of several threads overlap, so their sum can exceed the span. TensorBoard's profile plugin
and XProf show the same trace with more tools (op profile, memory, roofline).
"""

import collections
import glob
import gzip
import json
import os
import re
import sys

from pfca_jax.cli import runner
from pfca_jax.errors import UserError


def newest_trace(workdir: str) -> str:
  found = sorted(glob.glob(os.path.join(workdir, 'plugins', 'profile', '*', 'perfetto_trace.json.gz')))
  if not found:
    raise UserError(f'no profile under {workdir}/plugins/profile/: train with --config.profile_steps=START:END')
  return found[-1]


def kind(op_name: str) -> str:
  """'conv_general_dilated.60' -> 'conv_general_dilated'; 'transpose_copy_fusion.57' -> 'transpose_copy_fusion'."""
  return re.sub(r'\.\d+$', '', op_name)


def steps(events: list[dict], module: str = 'jit_step') -> list[dict]:
  """Per traced step, in order: its number, host dispatch (ms), and its execution's span and operations."""
  annotations = sorted((e for e in events if e.get('name') == 'train' and 'step_num' in e.get('args', {})),
                       key=lambda e: e['ts'])
  runs = collections.defaultdict(list)
  for e in events:
    args = e.get('args', {})
    if e.get('ph') == 'X' and args.get('hlo_module') == module and 'run_id' in args and 'hlo_op' in args:
      runs[args['run_id']].append(e)
  executions = sorted(runs.values(), key=lambda ops: min(op['ts'] for op in ops))
  rows = []
  for annotation, ops in zip(annotations, executions):
    start, end = min(op['ts'] for op in ops), max(op['ts'] + op['dur'] for op in ops)
    by_kind = collections.Counter()
    for op in ops:
      by_kind[kind(op['args']['hlo_op'])] += op['dur'] / 1000
    rows.append({'step': int(annotation['args']['step_num']), 'dispatch_ms': annotation['dur'] / 1000,
                 'span_ms': (end - start) / 1000, 'ops': len(ops), 'ops_ms': sum(by_kind.values()),
                 'by_kind': by_kind})
  return rows


def main(argv=None) -> int:
  parser = runner.Parser(prog='python experiments/trace_summary.py', description=__doc__.splitlines()[0])
  parser.add_argument('--workdir', required=True)
  parser.add_argument('--top', type=int, default=8)
  args = parser.parse_args(argv)
  path = newest_trace(args.workdir)
  with gzip.open(path) as f:
    events = json.load(f)['traceEvents']
  print(path)
  for row in steps(events):
    print(f"step {row['step']}: host dispatch {row['dispatch_ms']:.1f} ms; jit_step ran {row['span_ms']:.1f} ms "
          f"({row['ops']} operations, {row['ops_ms']:.1f} ms summed over threads)")
    for name, ms in row['by_kind'].most_common(args.top):
      print(f'  {name:<40} {ms:8.1f} ms  {100 * ms / row["ops_ms"]:5.1f}%')
  return 0


if __name__ == '__main__':
  sys.exit(runner.run(main))
