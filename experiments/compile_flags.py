"""What XLA's CPU compile flags cost and change: the compile time of small train steps, and their bits.

    python experiments/compile_flags.py [--repeats=3] > experiments/results/compile_flags.md

The test suite compiles hundreds of small programs, and compiling takes most of its time; tests/conftest.py
sets `COMPILE_QUICKLY` (read from there) in every process of the suite. Each flag set here runs in fresh
processes with the commands' own XLA flag (cli/cpu_settings.py) and 8 simulated devices, as the suite's
do. Each process lowers and compiles the train step (loss and gradient, training mode) of three small
networks, runs it once, and hashes the initial variables, the loss and the gradients: the same hash as
with no flag means the same bits. The compile time is the median over --repeats processes.
"""

import ast
import datetime
import importlib.metadata
import json
import os
import statistics
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from pfca_jax.bench import timing  # noqa: E402 -- after the path above.
from pfca_jax.cli import cpu_settings, runner  # noqa: E402
from pfca_jax.errors import UserError  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CHILD = '''
import hashlib, json, time
import jax, jax.numpy as jnp, numpy as np
from pfca_jax import models

NETWORKS = [('cifar_resnet20 + pfca', 'cifar_resnet20', dict(attention='pfca'), (8, 32, 32, 3)),
            ('resnet18 + se', 'resnet18', dict(attention='se', num_classes=10), (4, 32, 32, 3)),
            ('msrresnet x2 + pfca', 'msrresnet', dict(scale=2, num_feat=16, num_block=2, attention='pfca'),
             (2, 12, 10, 3))]
digest, seconds = hashlib.sha1(), {}
for label, name, options, shape in NETWORKS:
  model = models.create(name, **options)
  x = jax.random.normal(jax.random.key(0), shape)
  variables = jax.jit(model.init)(jax.random.key(1), x)
  state = {k: v for k, v in variables.items() if k != 'params'}

  def loss(params):
    mutable = ['batch_stats'] if state else False
    y = model.apply({**state, 'params': params}, x, **({'train': True, 'mutable': mutable} if state else {}))
    return jnp.mean(jnp.square(y[0] if state else y))

  t0 = time.perf_counter()
  compiled = jax.jit(jax.value_and_grad(loss)).lower(variables['params']).compile()
  seconds[label] = time.perf_counter() - t0
  value, grads = compiled(variables['params'])
  for leaf in jax.tree.leaves(variables) + [value] + jax.tree.leaves(grads):
    digest.update(np.asarray(leaf).tobytes())
print(json.dumps({'seconds': seconds, 'hash': digest.hexdigest()}))
'''


def suite_flags() -> str:
  """The value of COMPILE_QUICKLY in tests/conftest.py, without importing it (it imports JAX)."""
  with open(os.path.join(REPO, 'tests', 'conftest.py')) as f:
    tree = ast.parse(f.read())
  for node in tree.body:
    if isinstance(node, ast.Assign) and getattr(node.targets[0], 'id', None) == 'COMPILE_QUICKLY':
      return ast.literal_eval(node.value)
  raise SystemExit('tests/conftest.py no longer defines COMPILE_QUICKLY')


def flag_sets() -> dict[str, str]:
  quick = suite_flags()
  sets = {'none (the commands)': ''}
  sets.update({flag: flag for flag in quick.split()})
  sets['all three (the test suite)'] = quick
  return sets


def measure(flags: str, repeats: int) -> dict:
  env = dict(os.environ, XLA_FLAGS=f'--xla_force_host_platform_device_count=8 {flags} {cpu_settings.XLA_FLAG}',
             JAX_PLATFORMS='cpu', JAX_ENABLE_COMPILATION_CACHE='false')
  runs = []
  for _ in range(repeats):
    out = subprocess.run([sys.executable, '-c', CHILD], cwd=REPO, env=env, check=True, capture_output=True,
                         text=True).stdout
    runs.append(json.loads(out.strip().splitlines()[-1]))
  assert len({r['hash'] for r in runs}) == 1, 'one flag set gave two results'
  labels = list(runs[0]['seconds'])
  return {'seconds': {k: statistics.median(r['seconds'][k] for r in runs) for k in labels}, 'hash': runs[0]['hash']}


def _main(argv) -> int:
  parser = runner.Parser('python experiments/compile_flags.py', __doc__.splitlines()[0])
  parser.add_argument('--repeats', type=int, default=3, help='processes per flag set (median)')
  args = parser.parse_args(argv)
  if args.repeats < 1:
    raise UserError(f'--repeats={args.repeats}: must be at least 1')
  results = {name: measure(flags, args.repeats) for name, flags in flag_sets().items()}
  labels = list(next(iter(results.values()))['seconds'])
  baseline = results['none (the commands)']
  print(f'# XLA CPU compile flags: compile seconds of a train step, and whether the bits change\n\n'
        f'{datetime.date.today()}, {timing.cpu_model()} ({os.cpu_count()} cores), jax {importlib.metadata.version("jax")}; '
        f'median of {args.repeats} processes each; `python experiments/compile_flags.py --repeats={args.repeats}`.\n')
  print('| XLA flags | ' + ' | '.join(labels) + ' | total | bits as with none |')
  print('|---|' + '---:|' * (len(labels) + 1) + '---|')
  for name, result in results.items():
    times = [result['seconds'][k] for k in labels]
    same = 'same' if result['hash'] == baseline['hash'] else 'differ'
    print(f'| {name} | ' + ' | '.join(f'{t:.2f}' for t in times) + f' | {sum(times):.2f} | {same} |')
  return 0


def main(argv=None) -> int:
  return runner.run(_main, argv)


if __name__ == '__main__':
  sys.exit(main())
