"""The job's watchdog: a lost or a stuck process ends every process of the job, each with one line.

JAX alone handles neither well. A process that dies makes the others' next collective fail (gloo, on
CPUs) or hang (NCCL, on GPUs), and 100 s later JAX's coordination service aborts them with a fatal
error dump; a process that is alive but stops stepping (jax-ml/jax#38503) hangs the job for good. An
orchestrator can restart only a job that ends, so here every process runs one daemon thread that:

- beats: writes a counter to JAX's distributed key-value store every `BEAT_S` seconds and reads the
  others'. A process whose counter has not moved for `peer_timeout_s` is lost; so is the coordinator
  (process 0, which holds the store) once the store stops answering.
- watches its own loop: the trainer reports each training step it dispatches and the watchdog sees
  each one complete (`jax.Array.is_ready`, no synchronisation). When neither happens for
  `step_timeout_s`, the process is stuck, or waits for one that is. The clock does not run before the
  first step has compiled, during an evaluation or during a checkpoint's blocking save
  (`Watchdog.paused`), nor after the last step (`Watchdog.steps_ended`), so a healthy but slow
  compilation, evaluation, save or end of the run never trips it.
- ends the job: the process that finds a fault says so in one line on stderr (the step, the fault,
  the last complete checkpoint), records it in the store, where every other process finds it at its
  next beat and ends with the same status, and leaves with `os._exit`: no traceback, no wait in
  `jax.distributed.shutdown` (which would abort), nothing flushed into a half-written checkpoint
  (orbax renames a save into place only once complete; the next start removes unfinished ones).

A process that ends for any other reason first records why (`finish`): a clean end (status 0, the
agreed checkpointed stop 143) is never taken for a loss, and a failure of one process (a full disk,
a bad input it alone saw) ends the others at once with its status and line.
"""

import collections
import contextlib
import os
import signal
import sys
import threading
import time

import jax

from pfca_jax.train import job_store

BEAT_S = 1.0  # How often each process writes its counter and reads the others'.

LOST_STATUS = 5   # A process of the job was lost (killed, crashed, preempted without notice, partitioned).
STUCK_STATUS = 6  # A process completed no training step for step_timeout_s.

_PREFIX = 'pfca_jax/watchdog/'


class Watchdog:
  """One per process, started right after the processes join and finished when the command ends."""

  def __init__(self, peer_timeout_s: float, step_timeout_s: float, before_exit=lambda: None):
    self.peer_timeout_s, self.step_timeout_s = peer_timeout_s, step_timeout_s
    self.before_exit = before_exit  # Called right before the process ends the job.
    self.me, self.count = jax.process_index(), jax.process_count()
    self.step = None            # The last training step dispatched.
    self.checkpoints = None     # WORKDIR/checkpoints, once known: the last complete one is named.
    self._pending = collections.deque()  # (step, array) dispatched, not yet seen complete.
    self._armed = False         # Off until the first step has compiled.
    self._paused = 0
    self._last_progress = time.monotonic()
    self._lock = threading.Lock()
    self._stop = threading.Event()
    self._client = job_store.client() if self.count > 1 else None
    self._beats = 0
    self._barriers = 0
    self._seen = {}             # peer -> (its last counter, when it changed)
    self._peer_steps = {}       # peer -> the step it last dispatched, as it beat it ('None' before its first)
    self._thread = threading.Thread(target=self._run, name='pfca-jax-watchdog', daemon=True)
    self._thread.start()

  # Called by the training loop.

  def dispatched(self, step: int, output) -> None:
    """A training step was dispatched; `output` (any array of its result) completes when it has run."""
    with self._lock:
      self.step = step
      self._pending.append((step, output))
      self._last_progress = time.monotonic()
      self._armed = True  # The first call compiled the step: from here on the clock runs.

  @contextlib.contextmanager
  def paused(self):
    """The clock stops inside: an evaluation or a checkpoint save, healthy however long it takes."""
    with self._lock:
      self._paused += 1
    try:
      yield
    finally:
      with self._lock:
        self._paused -= 1
        self._last_progress = time.monotonic()

  def steps_ended(self) -> None:
    """The training loop is over: the step clock stops for good. What follows (the last save's wait, the
    results, the other processes' ends at JAX's shutdown barrier) is no training step, however long it takes;
    the beats go on, so a lost process is still found."""
    with self._lock:
      self._armed = False

  def all_ready(self, name: str) -> None:
    """Waits until every process has come here (through the store: no collective).

    Before the first training step (each process holding its first batch) and each evaluation: CPU
    collectives (gloo) give up when a peer comes more than 30 s later, which input pipelines starting
    at different speeds, or busy CPUs, can cause. A lost peer ends the wait through the thread.
    """
    if self._client is None:
      return
    self._barriers += 1
    job_store.barrier(f'ready/{self._barriers}/{name}')

  def finish(self, status: int, line: str = '') -> None:
    """The command ends with `status`: recorded for the other processes, then the thread stops.

    0 and the checkpointed stop every process agreed on (143) are clean ends; any other status ends
    the other processes with it.
    """
    self._stop.set()
    if self._client is None:
      return
    try:
      if is_clean(status):
        self._client.key_value_set(f'{_PREFIX}done/{self.me}', str(status), allow_overwrite=True)
      else:  # This process's own line is printed by the command; the others end with it.
        self._record_end(status, f'process {self.me} of {self.count} failed: {line}')
    except Exception:  # noqa: BLE001 -- the store is gone with process 0's host: nothing to tell.
      pass

  def collective_failed(self, error: Exception) -> None:
    """A collective raised (a peer's connection reset): the beats tell which process was lost. Never returns."""
    deadline = time.monotonic() + self.peer_timeout_s + 5 * BEAT_S
    while time.monotonic() < deadline:  # The thread ends the process once the loss is certain.
      time.sleep(BEAT_S)
    first = next((line for line in str(error).splitlines() if line.strip()), type(error).__name__)
    self._end(LOST_STATUS, f'a collective with the other processes failed ({first[:160]})')

  # The thread.

  def _run(self) -> None:
    while not self._stop.wait(BEAT_S):
      try:
        if self._client is not None:
          self._beat()
        self._check_progress()
      except Exception as e:  # noqa: BLE001 -- a watchdog that dies silently would hide every later fault.
        if self._stop.is_set():
          return
        self._end(LOST_STATUS, f'the watchdog failed: {type(e).__name__}: {e}')

  def _beat(self) -> None:
    try:
      self._beats += 1
      # With the step this process last dispatched: a stuck process is the one the others are ahead of.
      self._client.key_value_set(f'{_PREFIX}beat/{self.me}', f'{self._beats} {self.step}', allow_overwrite=True)
      entries = dict(self._client.key_value_dir_get(_PREFIX))
    except Exception:  # noqa: BLE001 -- the store no longer answers: its host or the network is gone.
      if self._stop.is_set():
        return
      self._end(LOST_STATUS, "process 0's host was lost (JAX's coordination service stopped answering)")
      return
    ended = sorted(key for key in entries if key.startswith(f'{_PREFIX}ended/'))
    if ended:  # Another process has ended the job: end with its status and its reason.
      status, _, line = entries[ended[0]].partition(' ')
      self._end(int(status), line, record=False)
    now = time.monotonic()
    for peer in range(self.count):
      if peer == self.me or f'{_PREFIX}done/{peer}' in entries:
        continue
      beat = entries.get(f'{_PREFIX}beat/{peer}')
      if beat is not None:
        self._peer_steps[peer] = beat.split(' ')[1]
      last = self._seen.get(peer)
      if last is None or last[0] != beat:
        self._seen[peer] = (beat, now)
      elif now - last[1] > self.peer_timeout_s:
        self._end(LOST_STATUS, f'process {peer} of {self.count} was lost (no heartbeat for '
                               f'{self.peer_timeout_s:g} s, config.peer_timeout_s)')

  def _check_progress(self) -> None:
    with self._lock:
      while self._pending and self._pending[0][1].is_ready():
        self._pending.popleft()
        self._last_progress = time.monotonic()
      idle = time.monotonic() - self._last_progress
      stuck = self._armed and not self._paused and idle > self.step_timeout_s
    if stuck:
      self._end(STUCK_STATUS, f'no training step completed for {self.step_timeout_s:g} s (config.step_timeout_s): '
                              f'{self._who_is_stuck()}')

  def _who_is_stuck(self) -> str:
    """The process behind the others, from the steps they last beat, where that is one process."""
    steps = {self.me: self.step}
    steps.update({peer: int(step) for peer, step in self._peer_steps.items() if step.isdigit()})
    lowest = min(steps.values())
    behind = [peer for peer, step in steps.items() if step == lowest]
    if len(steps) == self.count > 1 and len(behind) == 1:
      ahead = max(steps.values())
      return f'process {behind[0]} of {self.count} is stuck (at step {lowest}; the others reached step {ahead})'
    return 'a process is stuck' if self.count > 1 else 'the process is stuck'

  def _record_end(self, status: int, line: str) -> None:
    self._client.key_value_set(f'{_PREFIX}ended/{self.me}', f'{status} {line}', allow_overwrite=True)

  def _end(self, status: int, fault: str, record: bool = True) -> None:
    """One line on stderr, the fault recorded for the other processes, and the process gone."""
    if record and self._client is not None:
      try:
        self._record_end(status, fault)
      except Exception:  # noqa: BLE001 -- the store may be what was lost.
        pass
    where = f'at step {self.step}' if self.step is not None else 'before the first training step'
    # A lost or stuck process is a fault of the machines: the same command resumes. Any other status is the
    # run's own (bad input, divergence, a full disk), which the failing process's line explains.
    then = ('rerun the same command on every host to resume' if status in (LOST_STATUS, STUCK_STATUS)
            else f'exit status {status}')
    print(f'error: {where}, {fault}; {last_checkpoint(self.checkpoints)}; the job ends: {then}', file=sys.stderr)
    sys.stdout.flush()
    sys.stderr.flush()
    self.before_exit()
    os._exit(status)


def is_clean(status: int) -> bool:
  """Whether a process's exit status ends the job cleanly: completed (0), or the checkpointed stop every process
  agreed on after a preemption notice (143, `checkpointing.StopRequest`)."""
  return status in (0, 128 + signal.SIGTERM)


def last_checkpoint(directory: str | None) -> str:
  """'the last complete checkpoint is step 10 in DIR' from the folder's names (a save in flight has a temporary one)."""
  steps = []
  if directory is not None and os.path.isdir(directory):
    steps = [int(name) for name in os.listdir(directory) if name.isdigit()]
  if not steps:
    return 'no checkpoint is complete yet'
  return f'the last complete checkpoint is step {max(steps)} in {directory}'


def status_of(error: BaseException | None) -> tuple[int, str]:
  """(exit status, one line) a command ends with after `error` (None: completed), as `runner.run` reports it."""
  from pfca_jax.errors import RunFailed, UserError
  from pfca_jax.train.checkpointing import TrainingStopped
  if error is None:
    return 0, ''
  if isinstance(error, TrainingStopped):
    return error.exit_status, ''
  if isinstance(error, SystemExit):
    return (error.code if isinstance(error.code, int) else 1), ''
  if isinstance(error, KeyboardInterrupt):
    return 130, ''
  first = (str(error).splitlines() or [type(error).__name__])[0]
  if isinstance(error, UserError):
    return 2, first
  return getattr(error, 'exit_status', 1) if isinstance(error, RunFailed) else 1, first


class _Unwatched:
  """In library use (train_and_evaluate called from Python) no watchdog runs: its calls do nothing."""
  checkpoints = None

  def dispatched(self, step, output):
    del step, output

  @contextlib.contextmanager
  def paused(self):
    yield

  def steps_ended(self):
    pass

  def collective_failed(self, error):
    del error

  def all_ready(self, name):
    del name


_current = None


def start(peer_timeout_s: float, step_timeout_s: float, before_exit=lambda: None) -> Watchdog:
  global _current
  _current = Watchdog(peer_timeout_s, step_timeout_s, before_exit)
  return _current


def current():
  """The command's watchdog, or one whose calls do nothing when none was started."""
  return _current if _current is not None else _Unwatched()
