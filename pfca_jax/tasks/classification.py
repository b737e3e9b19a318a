"""Classification: the loss, the train metrics, the masked evaluation sums, and the task the trainer runs.

Evaluation returns sums, not means, with padded examples (mask 0) contributing nothing, so that
adding the sums of every batch and dividing by the count of real examples gives the exact metric
over the whole split whatever the batch size and device count.
"""

import time

import jax
import jax.numpy as jnp

from pfca_jax.train import progress, sharding, steps
from pfca_jax.tasks.losses import cross_entropy, topk_correct, train_loss
from pfca_jax.tasks.base import Task


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


class ClassificationTask(Task):
  """Cross-entropy training and top-1/top-5 evaluation over a whole split (CIFAR-100, ImageNet)."""

  def open_data(self) -> None:
    super().open_data()
    # The classifier's width is the dataset's, known only now; the model built from the config is kept.
    self.model = self.model.clone(num_classes=self.info.num_classes)

  def input_shape(self) -> tuple:
    return (1, *self.info.image_shape)

  def loss(self, outputs, batch):
    return train_loss(outputs, batch, self.config.label_smoothing)

  def build_eval(self, state_shardings, mesh) -> None:
    # The eval batch rounded up to a multiple of the device count: the extra slots are masked padding.
    self._eval_config = self.config.copy_and_resolve_references()
    devices = jax.device_count()
    self._eval_config.eval_batch_size = -(-self.config.eval_batch_size // devices) * devices
    self._eval_step = steps.EvalStep(eval_sums, state_shardings, mesh)
    self._batch_sharding = sharding.batch_sharded(mesh)

  def evaluate(self, state, step: int, reporter, stop=None) -> dict:
    """Top-1/top-5/loss over every example of config.eval_split, as {'eval/<split>/<name>': value}.

    stop: asked before each batch; True raises steps.EvaluationStopped (see `steps.evaluate`).
    """
    t0 = time.perf_counter()
    batches, num_steps = self.data.eval_iterator(self._eval_config, self.info)
    with progress.Progress(num_steps, f'eval {self.config.eval_split}', 'batch', leave=False,
                           enabled=jax.process_index() == 0) as bar:
      sums = steps.evaluate(self._eval_step, state,
                            sharding.prefetch_to_devices(bar.wrap(batches), self._batch_sharding), stop)
    metrics = eval_metrics(sums)
    split = self.config.eval_split
    reporter.write_eval(step, split, metrics, time.perf_counter() - t0)
    return {f'eval/{split}/{k}': v for k, v in metrics.items()}
