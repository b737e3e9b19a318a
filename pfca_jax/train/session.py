"""One session of a run: train steps, and between them the evaluations, checkpoints and stop that are due.

Train steps are dispatched without waiting and their metrics fetched only at log steps. A stop request
(SIGTERM, Ctrl-C, a preemption notice) is honoured between steps, or between the batches of an
evaluation, which then runs first when the run resumes; the step is checkpointed and
`checkpointing.TrainingStopped` raised. The session's `time_breakdown.Clock` is switched to what the
loop is doing (steps, evaluation, saves, logging); `profiling.StepProfile` traces config.profile_steps.
"""

import itertools
import time

import jax

from pfca_jax.train import checkpointing, fault_injection, optim, profiling, reporting, sharding, steps, watchdog


class Training:
  """The loop of one session of a run: train steps, and between them evaluations, checkpoints and the stop."""

  def __init__(self, plan, state, meta: dict, reporter: reporting.Reporter,
               checkpoints: checkpointing.Checkpoints, clock):
    """plan: the run's `loop.Plan`; state and meta: restored or new; clock: the session's `time_breakdown.Clock`."""
    config, task = plan.config, plan.task
    self.plan, self.state, self.meta, self.reporter, self.checkpoints = plan, state, meta, reporter, checkpoints
    self.clock = clock
    self.step = self.start_step = int(state.step)
    self.final = {}  # The metrics of the last evaluation.
    self.eval_every = optim.interval_steps(config, 'eval_every', plan.steps_per_epoch)
    self.checkpoint_every = optim.interval_steps(config, 'checkpoint_every', plan.steps_per_epoch)
    self.train_step = steps.make_train_step(task.loss, plan.schedule, plan.shardings, plan.mesh,
                                            input_key=task.input_key, ema_decay=config.get('ema_decay', 0.0))
    self.non_finite = steps.make_state_check(plan.abstract, plan.shardings, plan.mesh)
    task.build_eval(plan.shardings, plan.mesh)
    self.stop_requested = checkpointing.StopRequest(checkpoints)
    self.watch = watchdog.current()  # Sees each step dispatched and complete; off while evaluating or saving.
    self.profile = profiling.StepProfile(config.profile_steps, plan.workdir, clock, reporter.print)
    self._since = time.time()  # Wall time is added to meta['wall_time_s'] at each save.

  def run(self) -> None:
    """Trains to plan.total_steps from the state's step, or raises TrainingStopped once a stop is checkpointed."""
    # The step whose evaluation a stop request interrupted: it runs first on resuming.
    if self.meta.pop('pending_eval', None) == self.start_step:
      self.evaluate(self.step)
    batches = sharding.prefetch_to_devices(fault_injection.slowed(self.plan.task.train_batches(self.start_step)),
                                           sharding.batch_sharded(self.plan.mesh))
    if self.step < self.plan.total_steps:
      first = next(batches)
      batches = itertools.chain([first], batches)
      if jax.process_count() > 1:
        # Compiled here, then every process waits for the others: the first step then starts everywhere at
        # once, whatever each process's input start-up and compilation took. CPU collectives (gloo) give
        # up on a process more than 30 s late.
        self.train_step = self.train_step.lower(self.state, first).compile()
        self.watch.all_ready('first step')
    self.clock.switch('train_step')  # Start-up ends: the first log interval starts here.
    self.clock.lap()
    try:
      while self.step < self.plan.total_steps:
        with self.profile.step(self.step):
          self.state, metrics = self.train_step(self.state, self.clock.next_batch(batches))
        self.step += 1
        output = jax.tree.leaves(metrics)[0]
        self.watch.dispatched(self.step, output)
        self.clock.dispatched(output)
        self.profile.dispatched(self.step, output)
        fault_injection.at('step', self.step)
        self.after_step(metrics)
    finally:
      self.profile.stop()
    if not self.final:  # Resumed a finished run: report its metrics again.
      self.evaluate(self.step)

  def after_step(self, metrics) -> None:
    """Logs, evaluates and checkpoints when due; on a stop request, checkpoints and raises TrainingStopped."""
    step, config = self.step, self.plan.config
    self.reporter.add_train(step, metrics)
    stop = self.stop_requested(step)
    last = step == self.plan.total_steps
    if step % config.log_every_steps == 0 or last or stop:
      fetched = self.reporter.fetch_train()  # Waits for the device: the steps' time.
      self.clock.settle_input()
      lap = self.clock.lap()
      with self.clock.charge('other'):
        self.reporter.write_train(step, fetched, lap)
    if step % self.eval_every == 0 or last:
      stop = self.evaluate_unless_stopped(stop)
    if step % self.checkpoint_every == 0 or last or stop:
      self.save()
    if stop:
      self.stop()

  def evaluate(self, step: int) -> None:
    """Evaluates the state (raising steps.EvaluationStopped when a stop request interrupts it)."""
    # With several processes the stop is agreed on between steps only (`StopRequest`): an evaluation
    # runs to its end there.
    stop = (lambda: self.stop_requested(step)) if jax.process_count() == 1 else None
    with self.watch.paused(), self.clock.charge('eval'):
      self.watch.all_ready(f'evaluation of step {step}')
      fault_injection.at('eval', step)
      self.final = self.plan.task.evaluate(self.state, step, self.reporter, stop=stop)
    self.meta['best'] = best_of(self.meta['best'], self.final)

  def evaluate_unless_stopped(self, stop: bool) -> bool:
    """The evaluation due at this step, unless a stop request comes before or during it; True when stopping."""
    if not stop:
      try:
        self.evaluate(self.step)
        return False
      except steps.EvaluationStopped:
        pass
    # Checkpointed next; the resumed run evaluates this step first.
    self.final, self.meta['pending_eval'] = {}, self.step
    return True

  def save(self) -> None:
    # Its first state check compiles, and a blocking save may be long: both healthy.
    with self.watch.paused(), self.clock.charge('checkpoint'):
      self.reporter.check_finite()  # Never save a state that has already diverged...
      bad = self.non_finite(self.state)  # ...nor one that an update has just overflowed.
      if bad is not None:
        raise reporting.TrainingDiverged(f'{bad} is not finite after step {self.step}: training stopped', self.step)
      self.meta['wall_time_s'] += self.seconds_since_save()
      self._since = time.time()
      self.meta['sessions'][-1]['time'] = self.clock.summary()  # A stopped session keeps its breakdown.
      self.checkpoints.save(self.step, self.state, dict(self.meta, step=self.step))
    fault_injection.at('save', self.step)

  def seconds_since_save(self) -> float:
    return time.time() - self._since

  def stop(self) -> None:
    message = (f'{self.stop_requested.signal_name or "preemption"}: checkpoint of step {self.step} saved in '
               f'{self.checkpoints.directory}; rerun the same command to resume'
               + ('' if 'pending_eval' not in self.meta else ' (the evaluation it interrupted runs first)'))
    self.reporter.print(message)
    raise checkpointing.TrainingStopped(message, self.stop_requested.signal_number)


def best_of(best: dict, current: dict) -> dict:
  """Per metric, the best value seen: lowest for losses, highest for the rest (accuracy, PSNR, SSIM)."""
  merged = dict(best)
  for name, value in current.items():
    if name.endswith(('/examples', '/images')) or '/bicubic_' in name:  # Counts and references, not scores.
      continue
    lower_is_better = name.endswith('/loss')
    if name not in merged or (value < merged[name] if lower_is_better else value > merged[name]):
      merged[name] = value
  return merged
