"""The training loop: one function, `train_and_evaluate(config, workdir)`, for every task and device count.

It reads as its steps: `prepare` checks everything that can fail because of what the user asked for
(config values, device count, workdir, dataset, and whether a checkpoint already in the workdir was
trained with this config: `pfca_jax.train.run_identity`) before anything is compiled or written;
`restore_or_initialise` places the state directly in its sharded placement; `announce` writes
config.json and prints the start line; `session.Training.run` trains, evaluating and checkpointing
between steps (a stop request raises `checkpointing.TrainingStopped` once its checkpoint is saved);
`results.write_results` writes results.json for a completed or a diverged run.
"""

import contextlib
import dataclasses
import os

import jax
import ml_collections
import optax

from pfca_jax import data, models
from pfca_jax.tasks import classification, super_resolution
from pfca_jax.tasks.base import Task
from pfca_jax.train import (checkpointing, fault_injection, init_from, job_store, optim, profiling, provenance,
                            reporting, run_identity, running_marker, sharding, time_breakdown, train_state,
                            watchdog)
from pfca_jax.train.results import write_results
from pfca_jax.train.session import Training
from pfca_jax.train.validation import UserError, check_training, check_workdir

# config.task -> the task's data, model, loss and evaluation.
TASKS = {'classification': classification.ClassificationTask,
         'super_resolution': super_resolution.SuperResolutionTask}


def check_config(config: ml_collections.ConfigDict) -> Task:
  """Names, options and ranges of everything the config asks for, before any data is read; returns the task."""
  if config.task not in TASKS:
    raise UserError(f'unknown task {config.task!r}; valid: {", ".join(TASKS)}')
  task = TASKS[config.task](config)
  check_training(config)
  sharding.check_batch_size('batch_size', config.batch_size)
  profiling.parse(config.profile_steps)  # Its range is checked against the run's steps once they are known.
  return task


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Trains and evaluates as `config` says; returns the final eval metrics (also in WORKDIR/results.json).

  Raises UserError for a mistake in what was asked for (before anything is compiled or written),
  checkpointing.TrainingStopped when a signal stopped training (after its checkpoint is saved),
  reporting.TrainingDiverged on a non-finite loss, gradient norm or state (results.json then says
  "status": "diverged"), and checkpointing.CheckpointSaveFailed when a checkpoint cannot be written.
  """
  clock = time_breakdown.Clock()  # Charges start-up from here.
  try:
    plan = prepare(config, workdir)
    os.makedirs(plan.workdir, exist_ok=True)  # Every check has passed: the first thing written.
    with holding_the_marker(plan.workdir):
      return _train(plan, clock)
  finally:
    clock.close()


@contextlib.contextmanager
def holding_the_marker(workdir: str):
  """Process 0 marks WORKDIR as trained by this job (WORKDIR/running.json) while inside; a crash leaves it stale."""
  marker = None
  if jax.process_index() == 0:
    marker = running_marker.claim(workdir, {'processes': jax.process_count(), 'devices': jax.device_count()})
  try:
    yield
  finally:
    if marker is not None:
      marker.release()


def _train(plan: 'Plan', clock: time_breakdown.Clock) -> dict:
  config = plan.config
  checkpoints = checkpointing.Checkpoints(plan.workdir, config.keep_checkpoints)
  watchdog.current().checkpoints = checkpoints.directory  # Named when a fault ends the job.
  fault_injection.at('startup')
  state, meta = restore_or_initialise(plan, checkpoints)
  reporter = reporting.Reporter(plan.workdir, plan.total_steps, config.batch_size, int(state.step))
  try:
    session = announce(plan, state, meta, reporter)
    training = Training(plan, state, meta, reporter, checkpoints, clock)
    try:
      training.run()
    except reporting.TrainingDiverged as e:
      raise record_divergence(e, plan.workdir, checkpoints, meta, session, clock) from None
    except jax.errors.JaxRuntimeError as e:
      if jax.process_count() > 1:  # A collective failed: another process was lost. Ends this one in one line.
        watchdog.current().collective_failed(e)
      raise
    finally:
      training.stop_requested.restore_handlers()
      # No step follows: the wait for the last save on every process, the results and the other processes'
      # ends are healthy however long they take (step_timeout_s is for steps).
      watchdog.current().steps_ended()
      with clock.charge('checkpoint'):
        checkpoints.close()  # Raises CheckpointSaveFailed if the last save failed...
    record_completion(plan, training, session, reporter, clock.summary())
  finally:
    reporter.close()  # ...and the logs are flushed all the same.
  return training.final


@dataclasses.dataclass
class Plan:
  """What a run is to do, all of it checked before anything is written."""
  config: ml_collections.ConfigDict
  workdir: str
  task: Task
  latest: tuple[int, dict] | None  # (step, meta) of the workdir's latest checkpoint; None for a new run.
  steps_per_epoch: int
  total_steps: int
  mesh: jax.sharding.Mesh
  schedule: optax.Schedule
  tx: optax.GradientTransformation
  abstract: object  # The train state's shapes, dtypes and shardings, nothing allocated.
  shardings: object
  initial_weights: dict | None  # config.init_from's values, read and checked against the network.
  initialised_from: dict | None


def prepare(config: ml_collections.ConfigDict, workdir: str) -> Plan:
  """Every check (config, workdir, dataset, the checkpoint already there, init_from), then the abstract state."""
  task = check_config(config)
  workdir = check_workdir(workdir)
  # Another job (a relaunch by mistake, processes that did not join) training this workdir: refused.
  refusal = job_store.decided_by_process_0(f'running/{workdir}', lambda: running_marker.refusal(workdir))
  if refusal is not None:
    raise UserError(refusal)
  latest, recorded = run_identity.check_against_checkpoint(config, workdir)
  init_weights = init_from.check(config) if latest is None else None  # A resumed run never reads it.
  task.open_data()
  steps_per_epoch = task.steps_per_epoch()
  if latest is not None:
    run_identity.check_resume(latest, recorded, config, steps_per_epoch, workdir)
  total_steps = optim.training_length(config, steps_per_epoch)
  profiling.check(config.profile_steps, latest[0] if latest else 0, total_steps)
  mesh = sharding.create_mesh()
  schedule = optim.create_schedule(config, steps_per_epoch, total_steps)
  tx = optim.create_optimizer(config, schedule)
  abstract, shardings = train_state.abstract_state(task.model, tx, task.input_shape(), config.seed, mesh,
                                                   _keeps_average(config))
  initial_weights = initialised_from = None
  if init_weights is not None:
    initial_weights, initialised_from = init_from.load(init_weights, config.model.name, abstract)
  return Plan(config, workdir, task, latest, steps_per_epoch, total_steps, mesh, schedule, tx, abstract, shardings,
              initial_weights, initialised_from)


def _keeps_average(config) -> bool:
  return config.get('ema_decay', 0.0) > 0


def restore_or_initialise(plan: Plan, checkpoints: checkpointing.Checkpoints) -> tuple[object, dict]:
  """(state, meta): the newest readable checkpoint's, or a new state (from init_from's weights if given)."""
  restored = checkpoints.restore(plan.abstract, warn=_print_on_main)
  if restored is not None:
    step, state, meta = restored
    if step != plan.latest[0]:
      _check_fallback(plan, step, meta)
    return state, meta
  config = plan.config
  state = train_state.create_state(plan.task.model, plan.tx, plan.task.input_shape(), config.seed, plan.shardings,
                                   _keeps_average(config))
  meta = {'best': {}, 'wall_time_s': 0.0, 'sessions': []}
  if plan.initial_weights is not None:
    state = init_from.apply(state, plan.initial_weights, plan.shardings)
    meta['initialised_from'] = plan.initialised_from
  return state, meta


def _check_fallback(plan: Plan, step: int, meta: dict) -> None:
  """The checks of `prepare` against the checkpoint restored in place of a damaged newer one."""
  recorded = run_identity.recorded_config(meta, plan.workdir)
  run_identity.check_config(recorded, plan.config, plan.workdir)
  run_identity.check_resume((step, meta), recorded, plan.config, plan.steps_per_epoch, plan.workdir)


def announce(plan: Plan, state, meta: dict, reporter: reporting.Reporter) -> dict:
  """Records this session in `meta` and WORKDIR/config.json, and prints the start line; returns the session."""
  config, start_step = plan.config, int(state.step)
  session = dict(provenance.collect(), start_step=start_step)
  meta.update(config=run_identity.to_record(config), steps_per_epoch=plan.steps_per_epoch,
              sessions=meta.get('sessions', []) + [session])
  # What `pfca_jax.predict` rebuilds the model from, and what produced it.
  reporting.write_json(plan.workdir, 'config.json', dict(meta['config'], provenance=session))
  reporter.print(start_line(config, models.count_params(state.params), plan.steps_per_epoch, plan.total_steps,
                            start_step))
  if config.dataset == data.SYNTHETIC:
    reporter.print(plan.task.data.DESCRIPTION)
  if 'initialised_from' in meta and start_step == 0:
    reporter.print(init_from.describe(meta['initialised_from']))
  if start_step == 0:
    reporter.write_config(start_step, config)
  return session


def start_line(config, num_params: int, steps_per_epoch: int, total_steps: int, start_step: int) -> str:
  """'cifar_resnet20 + pfca: 278,324 parameters, 8 device(s) over 1 process(es), ... steps[, resuming ...]'."""
  parts = [f'{num_params:,} parameters',
           f'{jax.device_count()} device(s) over {jax.process_count()} process(es)',
           f'{steps_per_epoch} steps/epoch', f'{total_steps} steps']
  if start_step:
    parts.append(f'resuming at step {start_step}')
  line = f'{config.model.name} + {config.model.attention}: ' + ', '.join(parts)
  if start_step and config.get('init_from'):
    line += ' (init_from is not read: a resumed run continues from its own checkpoint)'
  return line


def record_completion(plan: Plan, training: Training, session: dict, reporter: reporting.Reporter,
                      time_spent: dict) -> None:
  """Writes results.json for a run trained to its end: final and best metrics, size, length, time and speed.

  time_spent: this session's `time_breakdown.Clock.summary()`, printed as a table and recorded.
  """
  meta = training.meta
  reporter.print(time_breakdown.table(time_spent))
  outcome = dict(final=training.final, params=models.count_params(training.state.params), steps=training.step,
                 wall_time_s=meta['wall_time_s'] + training.seconds_since_save(),
                 train_images_per_sec=reporter.train_images_per_sec(), devices=jax.device_count(),
                 processes=jax.process_count())
  if 'initialised_from' in meta:
    outcome['initialised_from'] = meta['initialised_from']
  write_results(plan.workdir, meta, session, 'completed', time_spent, **outcome, **plan.task.results_extra())


def record_divergence(error: reporting.TrainingDiverged, workdir: str, checkpoints: checkpointing.Checkpoints,
                      meta: dict, session: dict, clock: time_breakdown.Clock) -> reporting.TrainingDiverged:
  """Writes results.json for a diverged run; returns the error naming the last good checkpoint."""
  with clock.charge('checkpoint'), watchdog.current().paused():
    checkpoints.close()  # The last good checkpoint complete on disk before it is named.
  last_good = checkpoints.latest_step()
  where = (f'the last good checkpoint is step {last_good} in {checkpoints.directory}' if last_good is not None
           else 'no checkpoint had been saved yet')
  write_results(workdir, meta, session, 'diverged', clock.summary(), step=error.step, reason=str(error),
                last_good_checkpoint=last_good)
  return reporting.TrainingDiverged(f'{error}; {where}', error.step)


def _print_on_main(text: str) -> None:
  if jax.process_index() == 0:
    print(text, flush=True)
