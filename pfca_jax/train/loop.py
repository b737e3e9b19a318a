"""The training loop: one function, `train_and_evaluate(config, workdir)`, for every task and device count.

Order of work: everything that can fail because of what the user asked for (config values, device
count, workdir, dataset, and whether a checkpoint already in the workdir was trained with this config:
`pfca_jax.train.run_identity`) is checked before anything is compiled or written. Then the
state is created (or restored) directly in its sharded placement and the loop runs: train steps are
dispatched without waiting, their metrics fetched only at log steps; evaluation, checkpoints and the
stop request (SIGTERM / preemption) are handled between steps; a stopped run raises
`checkpointing.TrainingStopped` once its checkpoint is saved.
"""

import os
import time

import jax
import ml_collections

from pfca_jax import data, models
from pfca_jax.tasks import classification, super_resolution
from pfca_jax.train import (checkpointing, init_from, optim, provenance, reporting, run_identity, sharding, steps,
                            train_state)
from pfca_jax.train.validation import UserError, check_training, check_workdir

# config.task -> the task's data, model, loss and evaluation.
TASKS = {'classification': classification.ClassificationTask,
         'super_resolution': super_resolution.SuperResolutionTask}


def check_config(config: ml_collections.ConfigDict):
  """Names, options and ranges of everything the config asks for, before any data is read; returns the task."""
  if config.task not in TASKS:
    raise UserError(f'unknown task {config.task!r}; valid: {", ".join(TASKS)}')
  task = TASKS[config.task](config)
  check_training(config)
  sharding.check_batch_size('batch_size', config.batch_size)
  return task


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Trains and evaluates as `config` says; returns the final eval metrics (also in WORKDIR/results.json).

  Raises UserError for a mistake in what was asked for (before anything is compiled or written),
  checkpointing.TrainingStopped when a signal stopped training (after its checkpoint is saved),
  reporting.TrainingDiverged on a non-finite loss, gradient norm or state (results.json then says
  "status": "diverged"), and checkpointing.CheckpointSaveFailed when a checkpoint cannot be written.
  """
  task = check_config(config)
  workdir = check_workdir(workdir)
  latest, recorded = run_identity.check_against_checkpoint(config, workdir)
  init_weights = init_from.check(config) if latest is None else None  # A resumed run never reads it.
  task.open_data()
  model = task.create_model()

  steps_per_epoch = task.steps_per_epoch()
  if latest is not None:
    run_identity.check_resume(latest, recorded, config, steps_per_epoch, workdir)
  total_steps = optim.training_length(config, steps_per_epoch)
  log_every = config.log_every_steps
  eval_every = optim.interval_steps(config, 'eval_every', steps_per_epoch)
  checkpoint_every = optim.interval_steps(config, 'checkpoint_every', steps_per_epoch)

  mesh = sharding.create_mesh()
  schedule = optim.create_schedule(config, steps_per_epoch, total_steps)
  tx = optim.create_optimizer(config, schedule)
  input_shape = task.input_shape()
  keep_average = config.get('ema_decay', 0.0) > 0
  abstract, state_shardings = train_state.abstract_state(model, tx, input_shape, config.seed, mesh, keep_average)
  initial_weights = None
  if init_weights is not None:  # Read and checked against the network before anything is written.
    initial_weights, initialised_from = init_from.load(init_weights, config.model.name, abstract)

  os.makedirs(workdir, exist_ok=True)  # Every check has passed: the first thing written.
  checkpoints = checkpointing.Checkpoints(workdir, config.keep_checkpoints)
  restored = checkpoints.restore(abstract, warn=_print_on_main)
  if restored is None:
    state = train_state.create_state(model, tx, input_shape, config.seed, state_shardings, keep_average)
    meta = {'best': {}, 'wall_time_s': 0.0, 'sessions': []}
    if initial_weights is not None:
      state = init_from.apply(state, initial_weights, state_shardings)
      meta['initialised_from'] = initialised_from
  else:
    step, state, meta = restored
    if step != latest[0]:  # Fell back past a damaged checkpoint: check the run against the one restored.
      recorded = run_identity.recorded_config(meta, workdir)
      run_identity.check_config(recorded, config, workdir)
      run_identity.check_resume((step, meta), recorded, config, steps_per_epoch, workdir)
  start_step = int(state.step)
  num_params = models.count_params(state.params)
  session = dict(provenance.collect(), start_step=start_step)
  meta.update(config=run_identity.to_record(config), steps_per_epoch=steps_per_epoch,
              sessions=meta.get('sessions', []) + [session])
  # The step whose evaluation a stop request interrupted: it runs first on resuming.
  pending_eval = meta.pop('pending_eval', None)

  reporter = reporting.Reporter(workdir, total_steps, config.batch_size, start_step)
  # What `pfca_jax.predict` rebuilds the model from, and what produced it.
  reporting.write_json(workdir, 'config.json', dict(meta['config'], provenance=session))
  reporter.print(f'{config.model.name} + {config.model.attention}: {num_params:,} parameters, '
                 f'{jax.device_count()} device(s) over {jax.process_count()} process(es), '
                 f'{steps_per_epoch} steps/epoch, {total_steps} steps'
                 + (f', resuming at step {start_step}' if start_step else '')
                 + (' (init_from is not read: a resumed run continues from its own checkpoint)'
                    if start_step and config.get('init_from') else ''))
  if config.dataset == data.SYNTHETIC:
    reporter.print(task.data.DESCRIPTION)
  if 'initialised_from' in meta and start_step == 0:
    reporter.print(init_from.describe(meta['initialised_from']))
  if start_step == 0:
    reporter.write_config(start_step, config)

  train_step = steps.make_train_step(task.loss, schedule, state_shardings, mesh, input_key=task.input_key,
                                     ema_decay=config.get('ema_decay', 0.0))
  non_finite = steps.make_state_check(abstract, state_shardings, mesh)
  task.build_eval(state_shardings, mesh)
  batch_sharding = sharding.batch_sharded(mesh)
  stop_requested = checkpointing.StopRequest(checkpoints)

  def run_eval(step: int):
    t0 = time.perf_counter()
    # With several processes the stop is agreed on between steps only (`StopRequest`): an evaluation
    # runs to its end there.
    stop = (lambda: stop_requested(step)) if jax.process_count() == 1 else None
    return task.evaluate(state, step, reporter, stop=stop), time.perf_counter() - t0

  final, step, session_start = {}, start_step, time.time()
  try:
    try:
      if pending_eval == start_step:
        final, _ = run_eval(step)
        meta['best'] = _best(meta['best'], final)
      batches = sharding.prefetch_to_devices(task.train_batches(start_step), batch_sharding)
      paused = 0.0  # Seconds spent evaluating since the last log line: not training throughput.
      while step < total_steps:
        state, metrics = train_step(state, next(batches))
        step += 1
        reporter.add_train(step, metrics)
        stop = stop_requested(step)
        last = step == total_steps
        if step % log_every == 0 or last or stop:
          reporter.flush_train(step, paused)
          paused = 0.0
        if step % eval_every == 0 or last:
          try:
            if stop:
              raise steps.EvaluationStopped()
            final, seconds = run_eval(step)
            paused += seconds
            meta['best'] = _best(meta['best'], final)
          except steps.EvaluationStopped:  # Checkpointed below; the resumed run evaluates this step first.
            final, stop, meta['pending_eval'] = {}, True, step
        if step % checkpoint_every == 0 or last or stop:
          reporter.check_finite()  # Never save a state that has already diverged...
          bad = non_finite(state)  # ...nor one that an update has just overflowed.
          if bad is not None:
            raise reporting.TrainingDiverged(f'{bad} is not finite after step {step}: training stopped', step)
          meta['wall_time_s'] += time.time() - session_start
          session_start = time.time()
          checkpoints.save(step, state, dict(meta, step=step))
        if stop:
          message = (f'{stop_requested.signal_name or "preemption"}: checkpoint of step {step} saved in '
                     f'{checkpoints.directory}; rerun the same command to resume'
                     + ('' if 'pending_eval' not in meta else ' (the evaluation it interrupted runs first)'))
          reporter.print(message)
          raise checkpointing.TrainingStopped(message, stop_requested.signal_number)
      if not final:  # Resumed a finished run: report its metrics again.
        final, _ = run_eval(step)
    except reporting.TrainingDiverged as e:
      checkpoints.close()  # The last good checkpoint complete on disk before it is named.
      last_good = checkpoints.latest_step()
      where = (f'the last good checkpoint is step {last_good} in {checkpoints.directory}' if last_good is not None
               else 'no checkpoint had been saved yet')
      reporting.write_json(workdir, 'results.json', {
          'status': 'diverged', 'step': e.step, 'reason': str(e), 'last_good_checkpoint': last_good,
          'best': meta['best'], 'config': meta['config'], 'provenance': session, 'sessions': meta['sessions']})
      raise reporting.TrainingDiverged(f'{e}; {where}', e.step) from None
    finally:
      stop_requested.restore_handlers()
      checkpoints.close()  # Raises CheckpointSaveFailed if the last save failed...
  finally:
    reporter.close()  # ...and the logs are flushed all the same.

  results = {'status': 'completed', 'final': final, 'best': meta['best'], 'params': num_params, 'steps': step,
             'wall_time_s': meta['wall_time_s'] + time.time() - session_start,
             'train_images_per_sec': reporter.train_images_per_sec(),
             'config': meta['config'], 'devices': jax.device_count(), 'processes': jax.process_count(),
             'provenance': session, 'sessions': meta['sessions']}
  if 'initialised_from' in meta:
    results['initialised_from'] = meta['initialised_from']
  if getattr(task, 'per_image', None):
    results['per_image'] = task.per_image
  reporting.write_json(workdir, 'results.json', results)
  return final


def _print_on_main(text: str) -> None:
  if jax.process_index() == 0:
    print(text, flush=True)


def _best(best: dict, current: dict) -> dict:
  """Per metric, the best value seen: lowest for losses, highest for the rest (accuracy, PSNR, SSIM)."""
  merged = dict(best)
  for name, value in current.items():
    if name.endswith(('/examples', '/images')) or '/bicubic_' in name:  # Counts and references, not scores.
      continue
    lower_is_better = name.endswith('/loss')
    if name not in merged or (value < merged[name] if lower_is_better else value > merged[name]):
      merged[name] = value
  return merged
