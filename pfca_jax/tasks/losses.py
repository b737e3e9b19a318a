"""The training losses, apart from the tasks' data pipelines so that the benchmark runs without TensorFlow.

Each loss takes the model's outputs and the batch and returns (scalar loss, metrics logged with it).
"""

import jax
import jax.numpy as jnp
import optax


def cross_entropy(logits: jax.Array, labels: jax.Array, label_smoothing: float = 0.0) -> jax.Array:
  """Per-example cross-entropy against one-hot targets, optionally smoothed."""
  targets = jax.nn.one_hot(labels, logits.shape[-1], dtype=jnp.float32)
  if label_smoothing:
    targets = optax.smooth_labels(targets, label_smoothing)
  return optax.softmax_cross_entropy(logits.astype(jnp.float32), targets)


def topk_correct(logits: jax.Array, labels: jax.Array, k: int) -> jax.Array:
  """1 where the label is among the k largest logits. Ties count against the label (a strict rank)."""
  label_logit = jnp.take_along_axis(logits, labels[:, None], axis=-1)
  rank = jnp.sum(logits > label_logit, axis=-1)
  return (rank < k).astype(jnp.int32)


def train_loss(logits, batch, label_smoothing: float):
  """Mean loss over the batch and the metrics logged with it."""
  loss = jnp.mean(cross_entropy(logits, batch['label'], label_smoothing))
  accuracy = jnp.mean(topk_correct(logits, batch['label'], 1).astype(jnp.float32))
  return loss, {'accuracy': accuracy}


def l1_loss(outputs, batch):
  """Mean absolute error against the HR patch, BasicSR's L1 (reduction 'mean')."""
  return jnp.mean(jnp.abs(outputs - batch['hr'])), {}
