"""Optimisers and learning-rate schedules, chosen by name from the config.

Weight decay is coupled, as in PyTorch's SGD: `wd * param` is added to the gradient before momentum,
so the reference recipes (which decay every parameter, BN scales and biases included) carry over
exactly. `weight_decay_on='kernels'` restricts it to conv and dense kernels.
"""

import math
from typing import Callable

import jax
import numpy as np
import optax

from pfca_jax.errors import UserError

SCHEDULES = ('step', 'cosine', 'cosine_restarts', 'constant')
WEIGHT_DECAY_ON = ('all', 'kernels')


def check_names(config) -> None:
  """Optimizer, schedule and weight_decay_on must be known names (one-line UserError otherwise)."""
  for field, valid in (('optimizer', OPTIMIZERS), ('schedule', SCHEDULES), ('weight_decay_on', WEIGHT_DECAY_ON)):
    if config[field] not in valid:
      raise UserError(f'unknown {field} {config[field]!r}; valid: {", ".join(valid)}')


def _number(value) -> bool:
  return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def check_values(config) -> None:
  """The numbers the optimiser and schedule read are in range (one-line UserError otherwise).

  The learning rate, warm-up, weight decay and step boundaries always; momentum, Adam's betas, the decay
  factor and the restarts only where the chosen optimiser or schedule reads them.
  """
  def refuse(field, requirement):
    raise UserError(f'{field}={config.get(field)!r} {requirement}')

  if not (_number(config.base_learning_rate) and config.base_learning_rate > 0):
    refuse('base_learning_rate', 'must be a number > 0 (the peak rate at lr_reference_batch_size)')
  if not (isinstance(config.lr_reference_batch_size, int) and config.lr_reference_batch_size >= 1):
    refuse('lr_reference_batch_size', 'must be a positive integer')
  if not (_number(config.warmup_epochs) and config.warmup_epochs >= 0):
    refuse('warmup_epochs', 'must be a number >= 0')
  if not (_number(config.weight_decay) and config.weight_decay >= 0):
    refuse('weight_decay', 'must be a number >= 0')
  if config.optimizer == 'sgd' and not (_number(config.momentum) and 0 <= config.momentum < 1):
    refuse('momentum', 'must be in [0, 1) (0: plain SGD)')
  if config.optimizer == 'adam':
    for field in ('adam_b1', 'adam_b2'):
      if field in config and not (_number(config[field]) and 0 <= config[field] < 1):
        refuse(field, 'must be in [0, 1)')
  boundaries = config.get('lr_boundaries_epochs', ())  # Checked wherever present: ('abc',) is always a typo.
  if not (all(_number(e) and e >= 0 for e in boundaries) and list(boundaries) == sorted(boundaries)):
    refuse('lr_boundaries_epochs', 'must be increasing epoch numbers >= 0, e.g. (81, 122)')
  if config.schedule == 'step':
    if not (_number(config.lr_decay_factor) and config.lr_decay_factor > 0):
      refuse('lr_decay_factor', 'must be a number > 0 (0.1: each boundary divides the rate by 10)')
  if config.schedule == 'cosine_restarts':
    periods = config.lr_restart_periods
    if not (periods and all(isinstance(p, int) and not isinstance(p, bool) and p >= 1 for p in periods)):
      refuse('lr_restart_periods', 'must be one or more positive step counts, e.g. (250000, 250000)')
    if not (_number(config.lr_min) and 0 <= config.lr_min < peak_learning_rate(config)):
      refuse('lr_min', f'must be >= 0 and below the peak rate {peak_learning_rate(config):g}')


def peak_learning_rate(config) -> float:
  """The base rate scaled linearly with the global batch (lr 0.1 x batch / 256 for ImageNet)."""
  return config.base_learning_rate * config.batch_size / config.lr_reference_batch_size


def create_schedule(config, steps_per_epoch: int, total_steps: int) -> optax.Schedule:
  """Linear warm-up (warmup_epochs) into a 'step', 'cosine' or 'constant' schedule, per optimiser step."""
  check_names(config)
  peak = peak_learning_rate(config)
  warmup = int(round(config.warmup_epochs * steps_per_epoch))
  if config.schedule == 'step':
    boundaries = {int(round(e * steps_per_epoch)): config.lr_decay_factor for e in config.lr_boundaries_epochs}
    main = optax.piecewise_constant_schedule(peak, boundaries)
  elif config.schedule == 'cosine':
    main = optax.cosine_decay_schedule(peak, max(total_steps - warmup, 1))
  elif config.schedule == 'cosine_restarts':
    # Each period anneals from the peak to lr_min, then the rate jumps back (SGDR, BasicSR's CosineAnnealingRestartLR).
    periods = [int(p) for p in config.lr_restart_periods]
    cycles = [optax.cosine_decay_schedule(peak, p, alpha=config.lr_min / peak) for p in periods]
    main = optax.join_schedules(cycles, list(np.cumsum(periods)[:-1]))
  else:
    main = optax.constant_schedule(peak)
  if warmup <= 0:
    return main
  if config.schedule == 'step':
    # Boundaries count from the start of training, not from the end of the warm-up.
    return lambda step: jax.numpy.where(step < warmup, peak * step / warmup, main(step))
  return optax.join_schedules([optax.linear_schedule(0.0, peak, warmup), main], [warmup])


def _decay_mask(which: str) -> Callable:
  if which == 'all':
    return lambda params: jax.tree.map(lambda _: True, params)
  return lambda params: jax.tree.map(lambda p: p.ndim > 1, params)


def _sgd(config, schedule):
  return optax.sgd(schedule, momentum=config.momentum or None, nesterov=config.nesterov)


def _adam(config, schedule):
  return optax.adam(schedule, b1=config.get('adam_b1', 0.9), b2=config.get('adam_b2', 0.999))


OPTIMIZERS: dict[str, Callable] = {'sgd': _sgd, 'adam': _adam}


def create_optimizer(config, schedule: optax.Schedule) -> optax.GradientTransformation:
  check_names(config)
  parts = []
  if config.weight_decay:
    parts.append(optax.add_decayed_weights(config.weight_decay, mask=_decay_mask(config.weight_decay_on)))
  parts.append(OPTIMIZERS[config.optimizer](config, schedule))
  return optax.chain(*parts)


def training_length(config, steps_per_epoch: int) -> int:
  """num_train_steps when > 0, else num_epochs worth of steps (at least 1)."""
  if config.num_train_steps > 0:
    return int(config.num_train_steps)
  return max(1, int(math.ceil(config.num_epochs * steps_per_epoch)))


def interval_steps(config, name: str, steps_per_epoch: int) -> int:
  """config.<name>_steps when > 0, else config.<name>_epochs converted to steps (at least 1)."""
  steps = config.get(f'{name}_steps', -1)
  if steps > 0:
    return int(steps)
  return max(1, int(round(config.get(f'{name}_epochs') * steps_per_epoch)))
