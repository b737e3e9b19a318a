"""`config.profile_steps = 'START:END'`: a `jax.profiler` trace of those training steps, in WORKDIR/plugins/profile/.

The trace starts when START steps have been done and stops once step END has completed on the device:
'10:15' holds the five steps the log numbers 11 to 15, each marked as a step (`StepTraceAnnotation`)
for TensorBoard's profile plugin and XProf. Process 0 alone traces: one file per host would be written
into the one shared workdir, and every process runs the same program. JAX writes the XPlane file
(`<host>.xplane.pb`, for TensorBoard and XProf) and `perfetto_trace.json.gz` (for ui.perfetto.dev) in
WORKDIR/plugins/profile/<date>/, where `tensorboard --logdir=WORKDIR` finds them. Profiling reads the
run and changes nothing it computes.
"""

import contextlib

import jax

from pfca_jax.errors import UserError


def parse(text: str) -> tuple[int, int] | None:
  """(START, END) of 'START:END'; None for ''. Raises UserError for anything else."""
  if not text:
    return None
  start, sep, end = text.partition(':')
  try:
    bounds = int(start), int(end)
  except ValueError:
    bounds = None
  if not sep or bounds is None or not 0 <= bounds[0] < bounds[1]:
    raise UserError(f'config.profile_steps={text!r} is not START:END with 0 <= START < END (the steps after '
                    f"START up to END, e.g. '10:15'); empty for no profile")
  return bounds


def check(text: str, start_step: int, total_steps: int) -> None:
  """Refuses a range outside the steps this session trains (start_step, total_steps], in one line."""
  bounds = parse(text)
  if bounds is None:
    return
  if bounds[0] < start_step or bounds[1] > total_steps:
    resuming = f', resuming at step {start_step}' if start_step else ''
    raise UserError(f'config.profile_steps={text!r} is outside the steps this session trains ({start_step}:'
                    f'{total_steps}{resuming}); give a range within it')


class StepProfile:
  """Starts and stops the trace around the steps of `config.profile_steps`; a no-op when it is empty."""

  def __init__(self, text: str, workdir: str, clock, print_fn):
    bounds = parse(text)
    self.bounds = bounds if jax.process_index() == 0 else None
    self.workdir, self.clock, self.print = workdir, clock, print_fn
    self.active = False

  def step(self, done: int):
    """Wraps the dispatch of the step after `done` steps: starts the trace at START, marks each traced step."""
    if self.bounds is None:
      return contextlib.nullcontext()
    if done == self.bounds[0]:
      with self.clock.charge('other'):
        jax.profiler.start_trace(self.workdir, create_perfetto_trace=True)
      self.active = True
    if self.active:
      return jax.profiler.StepTraceAnnotation('train', step_num=done + 1)
    return contextlib.nullcontext()

  def dispatched(self, done: int, output) -> None:
    """After step `done` is dispatched: at END, waits for it to run (in the trace), then writes the trace."""
    if self.active and done == self.bounds[1]:
      output.block_until_ready()
      self.stop()
      self.print(f'profile of steps {self.bounds[0] + 1} to {self.bounds[1]} written under '
                 f'{self.workdir}/plugins/profile/ (tensorboard --logdir={self.workdir}, or perfetto_trace.json.gz '
                 'on ui.perfetto.dev)')

  def stop(self) -> None:
    """Ends a trace still running (the run stopped or failed inside the range)."""
    if self.active:
      self.active = False
      with self.clock.charge('other'):
        jax.profiler.stop_trace()
