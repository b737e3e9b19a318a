"""Classification: the loss, the train metrics and the masked evaluation sums.

Evaluation returns sums, not means, with padded examples (mask 0) contributing nothing, so that
adding the sums of every batch and dividing by the count of real examples gives the exact metric
over the whole split whatever the batch size and device count.
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


def eval_sums(logits, batch) -> dict:
  """Sums over the real examples of a padded batch: count, loss, top-1 and top-5 hits."""
  mask = batch['mask'].astype(jnp.int32)
  k5 = min(5, logits.shape[-1])
  return {
      'count': jnp.sum(mask),
      'loss': jnp.sum(cross_entropy(logits, batch['label']) * mask),
      'top1': jnp.sum(topk_correct(logits, batch['label'], 1) * mask),
      'top5': jnp.sum(topk_correct(logits, batch['label'], k5) * mask),
  }


def eval_metrics(sums: dict) -> dict:
  """Means over the split from the summed counts (host side, float64)."""
  count = int(sums['count'])
  if count == 0:
    raise ValueError('evaluation saw no examples')
  return {'top1': float(sums['top1']) / count, 'top5': float(sums['top5']) / count,
          'loss': float(sums['loss']) / count, 'examples': count}
