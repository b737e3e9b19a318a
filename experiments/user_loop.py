"""A plain training loop of a pfca_jax model, written as docs/models.md tells a library user: timed.

    python experiments/user_loop.py [--model=resnet50|msrresnet_x4] [--attention=pfca]
        [--attention_impl=fast|reference] [--cpu_settings=on|off] [--batch_size=16] [--steps=6]

No trainer, no config: `models.create`, optax, one `jax.jit`ted step. With `--cpu_settings=on` the
script calls `pfca_jax.cli.cpu_settings.apply()` first, before JAX is imported, as the guide shows;
with `off` it runs as a script that skips that line. Prints the median step time over `--steps`
steps after one untimed step (the compilation). docs/models.md and experiments/results/user_loop.md
give the measurements.
"""

import sys
import time

from pfca_jax.cli import runner

SIDES = {'resnet50': 224, 'msrresnet_x4': 32}  # Input side: ImageNet's crop, MSRResNet x4's LR patch.


def parse(argv):
  parser = runner.Parser(prog='python experiments/user_loop.py', description=__doc__.split('\n')[0])
  parser.add_argument('--model', default='msrresnet_x4', choices=sorted(SIDES))
  parser.add_argument('--attention', default='pfca')
  parser.add_argument('--attention_impl', default='fast', choices=('fast', 'reference'))
  parser.add_argument('--cpu_settings', default='on', choices=('on', 'off'))
  parser.add_argument('--batch_size', type=int, default=16)
  parser.add_argument('--steps', type=int, default=6)
  args = parser.parse_args(argv)
  from pfca_jax.models.attention import ATTENTIONS  # Imports JAX: after cpu_settings.apply().
  if args.attention not in ATTENTIONS:
    parser.error(f'--attention={args.attention!r}; valid: {", ".join(ATTENTIONS)}')
  if args.batch_size < 1 or args.steps < 1:
    parser.error(f'--batch_size={args.batch_size} and --steps={args.steps} must be >= 1')
  return args


def main(argv=None) -> int:
  args = parse(argv)
  import jax
  import jax.numpy as jnp
  import numpy as np
  import optax

  from pfca_jax import models

  side = SIDES[args.model]
  rng = np.random.default_rng(0)
  if args.model == 'resnet50':
    model = models.create('resnet50', attention=args.attention, attention_impl=args.attention_impl)
    x = jnp.asarray(rng.normal(size=(args.batch_size, side, side, 3)), jnp.float32)
    y = jnp.asarray(rng.integers(0, 1000, args.batch_size))
    loss_of = lambda out: optax.softmax_cross_entropy_with_integer_labels(out, y).mean()
    tx = optax.sgd(0.1, momentum=0.9)
  else:
    model = models.create('msrresnet', scale=4, attention=args.attention, attention_impl=args.attention_impl)
    x = jnp.asarray(rng.uniform(size=(args.batch_size, side, side, 3)), jnp.float32)
    hr = jnp.asarray(rng.uniform(size=(args.batch_size, 4 * side, 4 * side, 3)), jnp.float32)
    loss_of = lambda out: jnp.mean(jnp.abs(out - hr))
    tx = optax.adam(2e-4, b1=0.9, b2=0.99)

  variables = model.init(jax.random.key(0), x[:1])
  params, batch_stats = variables['params'], variables.get('batch_stats', {})
  opt_state = tx.init(params)

  def loss_fn(params, batch_stats):
    if batch_stats:
      out, updates = model.apply({'params': params, 'batch_stats': batch_stats}, x, train=True,
                                 mutable=['batch_stats'])
      return loss_of(out), updates['batch_stats']
    return loss_of(model.apply({'params': params}, x, train=True)), batch_stats

  @jax.jit
  def step(params, batch_stats, opt_state):
    (loss, batch_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, batch_stats)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), batch_stats, opt_state, loss

  times = []
  for i in range(args.steps + 1):
    start = time.perf_counter()
    params, batch_stats, opt_state, loss = step(params, batch_stats, opt_state)
    loss.block_until_ready()
    if i:
      times.append(time.perf_counter() - start)
  times.sort()
  print(f'{args.model} + {args.attention} ({args.attention_impl}), cpu_settings {args.cpu_settings}, '
        f'batch {args.batch_size}: median {1000 * times[len(times) // 2]:.0f} ms a step '
        f'(min {1000 * times[0]:.0f}, max {1000 * times[-1]:.0f}, {args.steps} steps)')
  return 0


if __name__ == '__main__':
  if '--cpu_settings=off' not in sys.argv:
    from pfca_jax.cli import cpu_settings
    cpu_settings.apply()  # As docs/models.md shows: first, before JAX is imported.
  sys.exit(runner.run(main))
