"""PFCA's train-step cost under other formulations of its channel statistics, timed side by side.

    python experiments/pfca_formulations.py [--benchmark=resnet50] [--batch_size=16] [--dtype=float32]
        [--variants=none,pfca,two_pass,two_pass_barrier,raw_moments,se] [--rounds=5] [--steps=1]
        [--json=out.json]

Each variant is the trainer's step of pfca_jax.bench (ResNets: PFCA fused into the last BatchNorm of
each block), traced with `pfca_weights` swapped for another formulation of the same function:
  pfca              as shipped: one level of channel sums of u - u[:, :1]
  two_pass          the textbook form: the channel mean, then the mean of squared deviations from it
  two_pass_barrier  two_pass with its (N, C) results behind an optimisation barrier (in ResNets the
                    fused BatchNorm's per-(n, c) gain and shift), so XLA cannot fuse the chain
                    into the full-resolution kernels around it
  raw_moments       one level of sums of u and u^2, unshifted (loses precision when channel means are
                    large and close together; see tests/test_fast_attention.py)
and `none` / `se` for reference. This is how the shipped formulation was chosen
(experiments/results/speed.md): the variants differ only in how XLA fuses them.
"""

import contextlib
import json
import sys

if __name__ == '__main__':
  from pfca_jax.cli import cpu_settings
  cpu_settings.apply()  # Before JAX: see pfca_jax/cli/cpu_settings.py.

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from pfca_jax.bench import timing  # noqa: E402
from pfca_jax.errors import UserError  # noqa: E402
from pfca_jax.models.fast import attention, batchnorm as fused  # noqa: E402
from pfca_jax.cli import runner  # noqa: E402


def _two_pass(u, lam, variance):
  d = jnp.square(u - jnp.mean(u, axis=-1, keepdims=True))
  var = jnp.sum(d, axis=-1, keepdims=True) / (u.shape[-1] - 1 if variance == 'unbiased' else u.shape[-1])
  return jax.nn.sigmoid(d / (4.0 * (var + lam)) + 0.5)


def _two_pass_barrier(u, lam, variance):
  return jax.lax.optimization_barrier(_two_pass(u, lam, variance))


_FUSED_GAINS = fused._gains


def _gains_barrier(*args, **kwargs):
  """The fused BatchNorm's per-(n, c) gain and shift, materialised before the full-resolution pass."""
  gain, shift, mean, var = _FUSED_GAINS(*args, **kwargs)
  gain, shift = jax.lax.optimization_barrier((gain, shift))
  return gain, shift, mean, var


def _raw_moments(u, lam, variance):
  c = u.shape[-1]
  mean = jnp.mean(u, axis=-1, keepdims=True)
  sum_sq = jnp.maximum(jnp.sum(jnp.square(u), axis=-1, keepdims=True) - c * jnp.square(mean), 0.0)
  var = sum_sq / (c - 1 if variance == 'unbiased' else c)
  return jax.nn.sigmoid(jnp.square(u - mean) / (4.0 * (var + lam)) + 0.5)


FORMULATIONS = {'pfca': attention.pfca_weights, 'two_pass': _two_pass, 'two_pass_barrier': _two_pass_barrier,
                'raw_moments': _raw_moments}
VARIANTS = ('none', 'se') + tuple(FORMULATIONS)


@contextlib.contextmanager
def _formulation(fn):
  """pfca_weights swapped in both places that trace it (the PFCA module and the fused BatchNorm)."""
  saved = attention.pfca_weights, fused.pfca_weights, fused._gains
  attention.pfca_weights = fused.pfca_weights = fn
  if fn is _two_pass_barrier:
    fused.pfca_weights, fused._gains = _two_pass, _gains_barrier
  try:
    yield
  finally:
    attention.pfca_weights, fused.pfca_weights, fused._gains = saved


def main(argv=None) -> int:
  parser = runner.Parser(prog='python experiments/pfca_formulations.py', description=__doc__.split('\n')[0])
  parser.add_argument('--benchmark', default='resnet50')
  parser.add_argument('--variants', default=','.join(VARIANTS))
  parser.add_argument('--batch_size', type=int, default=16)
  parser.add_argument('--dtype', default='float32', choices=('float32', 'bfloat16'))
  parser.add_argument('--rounds', type=int, default=5)
  parser.add_argument('--steps', type=int, default=1)
  parser.add_argument('--json', default=None)
  args = parser.parse_args(argv)
  try:
    benchmark = timing.parse_names(args.benchmark, timing.BENCHMARKS, 'benchmark')
    if len(benchmark) != 1:
      raise UserError(f'--benchmark={args.benchmark!r}: give one network')
    variants = timing.parse_names(args.variants, VARIANTS, 'variants')
    timing.check_timing_args(args)
  except UserError as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  log = lambda text: print(text, file=sys.stderr, flush=True)
  log(f'pfca_formulations on {timing.machine()}')
  entries = []
  for variant in variants:
    attention_name = 'pfca' if variant in FORMULATIONS else variant
    with _formulation(FORMULATIONS.get(variant, attention.pfca_weights)):
      entry = timing.Entry(benchmark[0], attention_name, args.batch_size, 'auto', args.dtype)
      entry.compile()  # Traces here, inside the swap.
    entry.name, entry.attention = f'{benchmark[0]} + {variant}', variant
    log(f'compiled {entry.name} in {entry.compile_s:.1f}s')
    entries.append(entry)
  timing.time_rounds(entries, args.rounds, args.steps, log)
  rows = timing.summarize(entries)
  print(timing.format_table(rows))
  if args.json:
    with open(args.json, 'w') as f:
      json.dump({'machine': timing.machine(), 'dtype': args.dtype, 'rounds': args.rounds,
                 'steps_per_round': args.steps, 'rows': rows}, f, indent=2)
  return 0


if __name__ == '__main__':
  sys.exit(runner.run(main))
