"""The trainer's pieces on 8 simulated devices: schedules, SGD semantics, metrics, exact evaluation,
sharding invariance and learning."""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from pfca_jax.tasks import classification, losses
from pfca_jax.train import config_defaults, optim, session, sharding, steps, train_state
from pfca_jax.models import resnet


def config(**overrides):
  c = config_defaults.classification()
  c.update(overrides)
  return c


def test_eight_simulated_devices():
  assert jax.device_count() == 8


def test_step_schedule_with_linear_batch_scaling():
  c = config(batch_size=256, lr_reference_batch_size=128, lr_boundaries_epochs=(2, 3))
  schedule = optim.create_schedule(c, steps_per_epoch=10, total_steps=40)
  lrs = [float(schedule(s)) for s in (0, 19, 20, 29, 30, 39)]
  np.testing.assert_allclose(lrs, [0.2, 0.2, 0.02, 0.02, 0.002, 0.002], rtol=1e-6)


def test_warmup_then_step_counts_boundaries_from_the_start():
  c = config(lr_boundaries_epochs=(3,), warmup_epochs=1.0)
  schedule = optim.create_schedule(c, steps_per_epoch=10, total_steps=50)
  np.testing.assert_allclose([float(schedule(s)) for s in (0, 5, 10, 29, 30)], [0, 0.05, 0.1, 0.1, 0.01],
                             rtol=1e-6, atol=1e-9)


def test_warmup_cosine():
  c = config(schedule='cosine', warmup_epochs=1.0)
  schedule = optim.create_schedule(c, steps_per_epoch=10, total_steps=110)
  np.testing.assert_allclose(float(schedule(5)), 0.05, rtol=1e-6)
  np.testing.assert_allclose(float(schedule(10)), 0.1, rtol=1e-6)
  np.testing.assert_allclose(float(schedule(60)), 0.05, rtol=1e-5)  # Half-way through the cosine.
  assert float(schedule(110)) < 1e-7


def test_cosine_restarts_anneal_each_period_to_lr_min_then_restart_at_the_peak():
  # BasicSR's CosineAnnealingRestartLR, restart weights 1: within a period of P steps starting at s0,
  # lr(t) = eta_min + (peak - eta_min) * (1 + cos(pi * (t - s0) / P)) / 2.
  c = config_defaults.super_resolution(4)
  c.update(base_learning_rate=2e-4, batch_size=32, lr_reference_batch_size=16, lr_restart_periods=(4, 6),
           lr_min=1e-7)
  schedule = optim.create_schedule(c, steps_per_epoch=5, total_steps=10)
  peak, low = 4e-4, 1e-7  # 2e-4 x 32 / 16.
  expected = {0: peak, 1: low + (peak - low) * (1 + math.cos(math.pi / 4)) / 2, 2: (peak + low) / 2,
              3: low + (peak - low) * (1 + math.cos(3 * math.pi / 4)) / 2,
              4: peak, 7: (peak + low) / 2, 9: low + (peak - low) * (1 + math.cos(5 * math.pi / 6)) / 2, 10: low}
  np.testing.assert_allclose([float(schedule(t)) for t in expected], list(expected.values()), rtol=1e-5)


def test_adam_recipe_takes_its_betas_from_the_config():
  # Adam by hand (Kingma & Ba, eps 1e-8 outside the root, as PyTorch and BasicSR), with DIV2K's
  # betas 0.9 / 0.99 and a constant 2e-4; no weight decay in that recipe.
  c = config_defaults.super_resolution(2)
  c.schedule = 'constant'
  tx = optim.create_optimizer(c, optim.create_schedule(c, 10, 10))
  params = jnp.zeros(2)  # At 0 the float32 parameters hold the 2e-4 steps to 7 digits.
  state = tx.init(params)
  m = v = expected = np.zeros(2)
  for t, grad in enumerate(([1.0, -3.0], [-2.0, 0.5], [0.25, 4.0]), start=1):
    grad = np.array(grad)
    m = 0.9 * m + 0.1 * grad
    v = 0.99 * v + 0.01 * grad ** 2
    expected = expected - 2e-4 * (m / (1 - 0.9 ** t)) / (np.sqrt(v / (1 - 0.99 ** t)) + 1e-8)
    updates, state = tx.update(jnp.asarray(grad, jnp.float32), state, params)
    params = optax.apply_updates(params, updates)
  np.testing.assert_allclose(params, expected, rtol=1e-5)


def test_l1_loss_is_the_mean_absolute_error():
  outputs = jnp.array([[[0.5, 1.0], [0.0, 0.25]]])
  hr = jnp.array([[[0.0, 1.0], [1.0, 0.0]]])
  loss, metrics = losses.l1_loss(outputs, {'hr': hr})
  assert float(loss) == pytest.approx((0.5 + 0.0 + 1.0 + 0.25) / 4) and metrics == {}


def test_sgd_matches_pytorch_coupled_weight_decay_and_momentum():
  # PyTorch SGD: g += wd * p; buf = m * buf + g; p -= lr * buf (nesterov: p -= lr * (g + m * buf)).
  for nesterov in (False, True):
    c = config(weight_decay=0.1, momentum=0.9, nesterov=nesterov, base_learning_rate=0.5)
    tx = optim.create_optimizer(c, optim.create_schedule(c, 10, 10))
    p = {'w': jnp.array([1.0, -2.0]), 'b': jnp.array([0.5])}
    state = tx.init(p)
    ref_p = {k: np.asarray(v, np.float64) for k, v in p.items()}
    buf = {k: np.zeros_like(v) for k, v in ref_p.items()}
    for g in ({'w': [0.3, 0.1], 'b': [1.0]}, {'w': [-0.2, 0.4], 'b': [0.0]}):
      updates, state = tx.update({k: jnp.asarray(v) for k, v in g.items()}, state, p)
      p = optax.apply_updates(p, updates)
      for k in ref_p:
        grad = np.asarray(g[k]) + 0.1 * ref_p[k]
        buf[k] = 0.9 * buf[k] + grad
        ref_p[k] = ref_p[k] - 0.5 * (grad + 0.9 * buf[k] if nesterov else buf[k])
    for k in ref_p:
      np.testing.assert_allclose(p[k], ref_p[k], rtol=1e-6)


def test_weight_decay_on_kernels_only_skips_vectors():
  c = config(weight_decay=0.1, weight_decay_on='kernels', momentum=0.0)
  tx = optim.create_optimizer(c, optim.create_schedule(c, 10, 10))
  p = {'kernel': jnp.ones((2, 2)), 'bias': jnp.ones((2,))}
  updates, _ = tx.update(jax.tree.map(jnp.zeros_like, p), tx.init(p), p)
  np.testing.assert_allclose(updates['kernel'], -0.1 * 0.1 * np.ones((2, 2)), rtol=1e-6)
  np.testing.assert_array_equal(updates['bias'], 0.0)


def test_durations_in_steps_or_epochs():
  c = config(num_epochs=2.5, num_train_steps=-1, eval_every_epochs=0.5, checkpoint_every_steps=7)
  assert optim.training_length(c, 10) == 25
  assert optim.interval_steps(c, 'eval_every', 10) == 5
  assert optim.interval_steps(c, 'checkpoint_every', 10) == 7
  c.num_train_steps = 3
  assert optim.training_length(c, 10) == 3


def test_best_keeps_each_metric_at_its_best_evaluation():
  earlier = {'eval/test/top1': 0.6, 'eval/test/loss': 1.5, 'eval/test/examples': 40}
  later = {'eval/test/top1': 0.5, 'eval/test/loss': 1.2, 'eval/test/examples': 40,
           'eval/set/psnr_y': 30.0, 'eval/set/bicubic_psnr_y': 28.0, 'eval/set/images': 5}
  # Lower is better for losses, higher for the rest; counts and the bicubic reference are not scores.
  assert session.best_of(session.best_of({}, earlier), later) == {
      'eval/test/top1': 0.6, 'eval/test/loss': 1.2, 'eval/set/psnr_y': 30.0}


def test_topk_and_loss_golden():
  logits = jnp.array([[3.0, 2.0, 1.0, 0.0], [0.0, 1.0, 2.0, 3.0]])
  labels = jnp.array([1, 1])
  np.testing.assert_array_equal(losses.topk_correct(logits, labels, 1), [0, 0])
  np.testing.assert_array_equal(losses.topk_correct(logits, labels, 2), [1, 0])
  np.testing.assert_array_equal(losses.topk_correct(logits, labels, 3), [1, 1])
  # Smoothing 0.1 over 4 classes: targets 0.925 for the label, 0.025 for the others, against the log-softmax
  # of (2, 0, 0, 0), whose normaliser is log(e^2 + 3).
  log_z = math.log(math.exp(2.0) + 3.0)
  smoothed = 0.925 * (log_z - 2.0) + 3 * 0.025 * log_z
  np.testing.assert_allclose(losses.cross_entropy(jnp.array([[2.0, 0.0, 0.0, 0.0]]), jnp.array([0]), 0.1),
                             [smoothed], rtol=1e-6)
  np.testing.assert_allclose(losses.cross_entropy(jnp.array([[2.0, 0.0, 0.0, 0.0]]), jnp.array([0]), 0.0),
                             [log_z - 2.0], rtol=1e-6)


class EncodedPrediction(nn.Module):
  """A fixed-logits fake model: the image's first pixel holds the predicted class p, and the logit of
  class c is -((c - p) mod C), so the label's rank is exactly (label - p) mod C."""
  num_classes: int = 10

  @nn.compact
  def __call__(self, x, train=False):
    pred = x[:, 0, 0, 0].astype(jnp.int32)
    classes = jnp.arange(self.num_classes)
    return -((classes[None, :] - pred[:, None]) % self.num_classes).astype(jnp.float32)


def test_exact_evaluation_counts_every_example_once_on_8_devices():
  # 10 examples at eval batch 4, rounded up to 8 for 8 devices: 2 batches, 6 padded slots. Offsets of the
  # label from the prediction: seven 0s (top-1 hits), one 3 (top-5 hit), one 6 and one 9 (misses).
  offsets = np.array([0, 0, 0, 0, 0, 0, 0, 3, 6, 9])
  labels = np.arange(10) % 10
  preds = (labels - offsets) % 10
  n, batch = 10, -(-4 // 8) * 8
  slots = -(-n // batch) * batch
  images = np.zeros((slots, 2, 2, 3), np.float32)
  images[:n, 0, 0, 0] = preds
  all_labels = np.zeros(slots, np.int32)
  all_labels[:n] = labels
  mask = np.arange(slots) < n  # Padded slots predict class 0 for label 0: they would count as hits.

  mesh = sharding.create_mesh()
  model = EncodedPrediction()
  tx = optax.identity()
  _, shardings = train_state.abstract_state(model, tx, (1, 2, 2, 3), 0, mesh)
  state = train_state.create_state(model, tx, (1, 2, 2, 3), 0, shardings)
  eval_step = steps.EvalStep(classification.eval_sums, shardings, mesh)
  batches = [{'image': images[i:i + batch], 'label': all_labels[i:i + batch], 'mask': mask[i:i + batch]}
             for i in range(0, slots, batch)]
  sums = steps.evaluate(eval_step, state, sharding.prefetch_to_devices(batches, sharding.batch_sharded(mesh)))
  metrics = classification.eval_metrics(sums)
  assert metrics['examples'] == 10
  assert metrics['top1'] == 0.7 and metrics['top5'] == 0.8
  ref_logits = -((np.arange(10)[None, :] - preds[:, None]) % 10).astype(np.float64)
  ref_loss = np.mean(np.log(np.exp(ref_logits).sum(1)) - ref_logits[np.arange(10), labels])
  np.testing.assert_allclose(metrics['loss'], ref_loss, rtol=1e-5)


def tiny_resnet():
  return resnet.ResNet(stage_sizes=(1, 1), block_cls=resnet.BasicBlock, widths=(8, 16), num_classes=10,
                       stem='cifar', attention='pfca')


def make_step(mesh, c, model, input_shape):
  schedule = optim.create_schedule(c, 10, 100)
  tx = optim.create_optimizer(c, schedule)
  _, shardings = train_state.abstract_state(model, tx, input_shape, 0, mesh)
  state = train_state.create_state(model, tx, input_shape, 0, shardings)
  loss = lambda logits, batch: losses.train_loss(logits, batch, 0.0)
  return state, steps.make_train_step(loss, schedule, shardings, mesh)


def test_sharding_invariance_one_versus_eight_devices():
  rng = np.random.default_rng(0)
  batch = {'image': rng.normal(size=(16, 8, 8, 3)).astype(np.float32), 'label': rng.integers(0, 10, 16)}
  c = config(num_epochs=10)
  results = []
  for devices in (jax.devices()[:1], jax.devices()):
    mesh = sharding.create_mesh(devices)
    state, step = make_step(mesh, c, tiny_resnet(), (1, 8, 8, 3))
    for _ in range(2):
      state, metrics = step(state, sharding.to_global(batch, sharding.batch_sharded(mesh)))
    results.append(jax.device_get((metrics, state.params, state.batch_stats)))
  (m1, p1, s1), (m8, p8, s8) = results
  np.testing.assert_allclose(m1['loss'], m8['loss'], rtol=1e-5)
  # BatchNorm statistics over the global batch, not per device: running stats agree too.
  for a, b in zip(jax.tree.leaves((p1, s1)), jax.tree.leaves((p8, s8))):
    np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-6)


def test_small_resnet_overfits_a_fixed_batch():
  from sklearn.datasets import load_digits
  digits = load_digits()
  images = np.repeat(np.repeat(digits.images[:64] / 16.0, 2, axis=1), 2, axis=2)  # 16x16 real digits.
  batch = {'image': np.repeat(images[..., None], 3, axis=-1).astype(np.float32),
           'label': digits.target[:64].astype(np.int32)}
  mesh = sharding.create_mesh()
  c = config(num_epochs=10, base_learning_rate=0.1, lr_reference_batch_size=64, weight_decay=0.0,
             schedule='constant')
  state, step = make_step(mesh, c, tiny_resnet(), (1, 16, 16, 3))
  global_batch = sharding.to_global(batch, sharding.batch_sharded(mesh))
  accuracies = []
  for _ in range(60):
    state, metrics = step(state, global_batch)
    accuracies.append(float(metrics['accuracy']))
  assert accuracies[0] < 0.5, accuracies[0]
  assert max(accuracies[-5:]) >= 0.9, accuracies[-10:]


def test_every_task_supplies_what_the_trainer_asks_and_builds_its_model_before_any_data():
  from pfca_jax.tasks.base import Task
  from pfca_jax.train import loop
  assert Task.__abstractmethods__ == {'input_shape', 'loss', 'build_eval', 'evaluate'}
  assert all(issubclass(task_class, Task) and not task_class.__abstractmethods__ for task_class in loop.TASKS.values())
  config = config_defaults.classification()
  config.dataset = 'no_such_dataset'  # Never opened: the model comes from the config alone.
  assert loop.TASKS['classification'](config).model.num_classes == 100
