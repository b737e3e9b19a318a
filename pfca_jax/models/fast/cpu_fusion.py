"""Values that XLA's CPU backend must compute once and store, instead of fusing them into every reader.

XLA's CPU fusion copies a cheap elementwise producer into each of its consumers. Two places in our
networks make that costly:

- Residual stages. A block's output relu(BN(conv(...)) + shortcut) is read by the next block's
  convolution and by its shortcut add. The convolution needs it stored, but the add is fused with
  a copy of the producer, which itself contains the previous block's add, and so on back to the
  stage's first block, so a stage's memory traffic grows with the square of its depth.
  `materialise` ends the chain at each block.
- PFCA's (N, C) derivative, which fused into the full-resolution loops that consume it would be
  evaluated once per pixel (fast/attention.py's `descriptor` uses `unfused`).

Fusion sizes and step times with and without each: experiments/results/speed.md, "Residual stream
stored once" and "Descriptor computed apart". `jax.lax.optimization_barrier` does neither on the CPU:
its compiler removes barriers before fusion. Both helpers are the identity in programs compiled for
other platforms (platform.py), where they are not needed (and a conditional would cost a
device-to-host transfer on a GPU).
"""

import jax
import jax.numpy as jnp

from pfca_jax.models.fast.platform import for_platform


def unfused(a):
  """`a`, computed as a @ I on the CPU: a product that XLA never fuses into the loops that read it.

  Exact: each output is one product by 1.0 plus products by 0.0 (HIGHEST precision, so no backend
  rounds the operands to a narrower float). For small (N, C) arrays only: it costs C^2 per row.
  """
  return for_platform(_times_identity, lambda t: t, a)


def _times_identity(a):
  return jnp.matmul(a, jnp.eye(a.shape[-1], dtype=a.dtype), precision=jax.lax.Precision.HIGHEST)


def materialise(x):
  """`x`, stored once on the CPU: fusion does not cross a conditional's boundary."""
  return for_platform(_stored, lambda t: t, x)


def _stored(x):
  # A constant predicate behind a barrier survives the simplifier yet reads no data (and, with the
  # batch sharded, needs no collective). The never-taken branch adds 0.0 because a conditional with
  # identical branches is simplified away. The backward pass transposes it into a conditional too,
  # which stores the residual stream's cotangent alike.
  keep = jax.lax.optimization_barrier(jnp.bool_(True))
  return jax.lax.cond(keep, lambda t: t, lambda t: t + 0.0, x)
