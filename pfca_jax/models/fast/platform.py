"""The one place where the fast layer chooses code by platform: per compiled program, not per process.

`for_platform(cpu_fn, other_fn, *args)` stages out both alternatives (`jax.lax.platform_dependent`);
the one that runs is chosen when the program is lowered, from the platform it is lowered for, so the
compiler never sees the other. A program jitted for the CPU while a GPU is the default backend gets
the CPU code, and one exported for a GPU or TPU from a CPU-only host gets theirs (tested both ways).
Asking `jax.default_backend()` while tracing would choose for the process's default device instead.
"""

from typing import Callable

import jax


def for_platform(cpu_fn: Callable, other_fn: Callable, *args):
  """cpu_fn(*args) in a program compiled for the CPU, other_fn(*args) for any other platform."""
  return jax.lax.platform_dependent(*args, cpu=cpu_fn, default=other_fn)
