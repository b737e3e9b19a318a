"""Where a session's wall time goes: start-up, compilation, training steps, input, evaluation, checkpoints.

One clock per session and process, on the host, with one hand: at every moment the time is charged to
exactly one category (`switch`, `charge`), so the categories tile the session and their shares add up
to 1. Two things the host cannot tell by where it is:

- Compilation happens inside calls charged to something else (the first training step, the first
  evaluation batch, the first state check before a save). JAX reports each tracing, lowering and
  backend compilation as a time span (`jax.monitoring`); the union of the spans that end while a
  category holds the clock moves from that category to `compile`.
- Waiting for input. Steps are dispatched asynchronously, so while the host blocks in the input
  pipeline the device may still be running the steps already dispatched: that wait costs nothing. The
  device waits only from the moment the last dispatched step completes until the next batch is there.
  A thread waits on each dispatched step's output (it blocks, the training loop never does) and notes
  when the step completed; at each log step, after the fetch the trainer makes there anyway, the part
  of every wait for a batch that came after the previous step had completed moves from `train_step`
  to `input`. No device synchronisation is added.

`train_step` is then the time the device had training work: the goodput.
"""

import contextlib
import queue
import threading
import time

import jax

# Category -> what the end-of-run table calls it, in its order.
CATEGORIES = {
    'startup': 'start-up (checks, data opening, restore)',
    'compile': 'compilation',
    'train_step': 'training steps',
    'input': 'waiting for input',
    'eval': 'evaluation',
    'checkpoint': 'checkpoint saves (blocking part)',
    'other': 'logging and profiling',
}
# What JAX reports for every function it traces, lowers to MLIR and compiles (jax._src.dispatch's names).
_COMPILE_EVENTS = ('/jax/core/compile/jaxpr_trace_duration', '/jax/core/compile/jaxpr_to_mlir_module_duration',
                   '/jax/core/compile/backend_compile_duration')


def covered(spans: list[tuple[float, float]]) -> float:
  """Seconds covered by the union of (start, end) spans: a trace nested in another counts once."""
  total, reach = 0.0, float('-inf')
  for start, end in sorted(spans):
    if end > reach:
      total += end - max(start, reach)
      reach = end
  return total


class Clock:
  """Starts charging `startup` when made; `close` when the session ends."""

  def __init__(self):
    self.seconds = dict.fromkeys(CATEGORIES, 0.0)
    self._current = 'startup'
    self._start = self._since = time.perf_counter()
    self._spans = []  # Compilation spans (time.time()) reported since the last switch.
    self._lap_start = dict(self.seconds)
    self._completions = _Completions()
    self._waits = []  # (started, ended, the step dispatched before it): input waits not yet settled.
    jax.monitoring.register_event_time_span_listener(self._on_span)

  def _on_span(self, event: str, start: float, end: float, **unused) -> None:
    if event in _COMPILE_EVENTS:
      self._spans.append((start, end))

  def switch(self, category: str) -> str:
    """Charges the time since the last switch to the current category (less compilation); returns that one."""
    now = time.perf_counter()
    spans, self._spans = self._spans, []
    elapsed = now - self._since
    compiled = min(covered(spans), elapsed)
    self.seconds[self._current] += elapsed - compiled
    self.seconds['compile'] += compiled
    previous, self._current, self._since = self._current, category, now
    return previous

  @contextlib.contextmanager
  def charge(self, category: str):
    """The time inside goes to `category`, then the clock goes back to the one it left."""
    previous = self.switch(category)
    try:
      yield
    finally:
      self.switch(previous)

  def next_batch(self, batches):
    """next(batches), the wait noted for `settle_input`."""
    started = time.perf_counter()
    batch = next(batches)
    if self._completions.count:
      self._waits.append((started, time.perf_counter(), self._completions.count))
    return batch

  def dispatched(self, output) -> None:
    """A training step was dispatched; `output`, an array it returns, is ready once it has run."""
    self._completions.watch(output)

  def settle_input(self) -> None:
    """Moves the device-idle part of the waits for input since the last call to `input`.

    Call it once every dispatched step is known to have completed (after the log step's fetch).
    """
    completed = self._completions.times()
    idle = 0.0
    for started, ended, step in self._waits:
      idle += max(0.0, ended - max(started, completed.get(step, ended)))
    self._waits = []
    self._completions.forget_before(self._completions.count)  # The next wait may follow the last step.
    self.switch(self._current)  # The waits' time is in the current category's count from here.
    self.seconds['train_step'] -= idle
    self.seconds['input'] += idle

  def lap(self) -> dict:
    """Seconds per category since the previous lap (the first: since the clock started)."""
    self.switch(self._current)
    lap = {name: self.seconds[name] - self._lap_start[name] for name in CATEGORIES}
    self._lap_start = dict(self.seconds)
    return lap

  def summary(self) -> dict:
    """{'wall_s', 'time_breakdown': {category: share of wall_s}, 'goodput'}: the session so far."""
    self.switch(self._current)
    wall = time.perf_counter() - self._start
    shares = {name: round(seconds / wall, 4) if wall > 0 else 0.0 for name, seconds in self.seconds.items()}
    return {'wall_s': round(wall, 3), 'time_breakdown': shares, 'goodput': shares['train_step']}

  def close(self) -> None:
    jax.monitoring.unregister_event_time_span_listener(self._on_span)
    self._completions.close()


def table(summary: dict) -> str:
  """The end-of-run table: seconds and share per category."""
  wall = summary['wall_s']
  width = max(map(len, CATEGORIES.values()))
  lines = [f'where the time went (process {jax.process_index()}, {wall:.1f} s since this session started):']
  for name, label in CATEGORIES.items():
    share = summary['time_breakdown'][name]
    lines.append(f'  {label:<{width}}  {share * wall:9.1f} s  {100 * share:5.1f}%'
                 + ('  (goodput)' if name == 'train_step' else ''))
  return '\n'.join(lines)


class _Completions:
  """A thread that notes when each dispatched step completed (perf_counter), by its dispatch number."""

  def __init__(self):
    self.count = 0
    self._done = {}
    self._queue = queue.Queue()
    self._thread = threading.Thread(target=self._run, name='pfca-jax-step-completions', daemon=True)
    self._thread.start()

  def watch(self, output) -> None:
    self.count += 1
    self._queue.put((self.count, output))

  def _run(self) -> None:
    while (item := self._queue.get()) is not None:
      number, output = item
      try:
        output.block_until_ready()
      except Exception:  # noqa: BLE001 -- a failed step is the training loop's to report.
        pass
      self._done[number] = time.perf_counter()
      del item, output  # The array is not kept alive until the next step completes.
      self._queue.task_done()
    self._queue.task_done()

  def times(self) -> dict:
    """{dispatch number: when it completed} of the steps watched and not forgotten; waits for the last notes."""
    self._queue.join()
    return dict(self._done)

  def forget_before(self, number: int) -> None:
    for old in [n for n in self._done if n < number]:
      del self._done[old]

  def close(self) -> None:
    self._queue.put(None)
