"""`python -m pfca_jax.bench`: the command. What it measures and its flags: pfca_jax/bench/timing.py."""

import os
import sys

from pfca_jax.cli import cpu_settings, runner

cpu_settings.apply()  # As the trainer does: the steps are timed as a user runs them (before JAX starts).
if '--torch=off' not in sys.argv:
  # JAX takes 75% of a GPU's memory when its backend starts (checking --batch_size starts it), which
  # leaves the PyTorch references of the same process a quarter of it; on demand instead.
  os.environ.setdefault('XLA_PYTHON_CLIENT_PREALLOCATE', 'false')

from pfca_jax.bench import timing, torch_reference  # noqa: E402 -- imports JAX, but neither TensorFlow nor PyTorch.


def main(argv=None) -> None:
  args = timing.parse_args(argv)  # A mistake costs no PyTorch import.
  if args.torch == 'auto':
    # Before TensorFlow (--pipelines): loading PyTorch's native libraries after it crashes here. Only as a
    # command: an importer (the tests) has TensorFlow loaded already and does not time PyTorch.
    torch_reference.preload()
  timing.measure(args)


sys.exit(runner.run(main))
