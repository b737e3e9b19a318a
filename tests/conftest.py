"""Helpers shared by the test modules, and 8 simulated CPU devices for the sharding tests."""

import os

# Must precede the first import of jax anywhere in the test session.
os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') + ' --xla_force_host_platform_device_count=8').strip()

import chex  # noqa: E402
import jax  # noqa: E402


def apply_twice_under_jit(model, variables, x1, x2, **apply_kwargs):
  """`model.apply` on two same-shaped inputs through one jitted function, failing if it is traced twice."""
  # chex counts traces per function definition, across calls of this helper; each call counts its own.
  chex.clear_trace_counter()

  @jax.jit
  @chex.assert_max_traces(n=1)
  def forward(v, inp):
    return model.apply(v, inp, **apply_kwargs)

  return forward(variables, x1), forward(variables, x2)
