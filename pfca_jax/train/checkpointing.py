"""Orbax checkpoints in WORKDIR/checkpoints, and the preemption signal that asks for one.

Each checkpoint holds the train state and a small JSON record (`meta`): the step, the fully
resolved config the run was trained with (`pfca_jax.train.run_identity` compares it with the config of a
resuming command), the steps per epoch (the training split's size), the best eval metrics so far,
the accumulated wall time and the provenance of every session that trained the run.

What can go wrong on disk, and what happens:
- A kill or a full disk during a save: orbax writes into a temporary folder and renames it when
  complete, so the previous checkpoints stay restorable; the temporary folder is removed when the
  trainer next opens the workdir.
- A save that fails (disk full, folder gone unwritable): `CheckpointSaveFailed`, one line naming the
  folder, the step and the OS error; the older checkpoints are untouched.
- A checkpoint that cannot be read (truncated or missing files): restoring falls back to the newest
  one that reads, and the trainer moves the damaged ones to WORKDIR/damaged_checkpoints/ (kept, not
  deleted) with a warning naming both steps. When none reads, one line says so: a workdir with
  checkpoints never silently starts again from step 0.
"""

import contextlib
import os
import re
import shutil
import signal
import threading
from typing import Callable

import jax
import numpy as np
import orbax.checkpoint as ocp

from pfca_jax.errors import RunFailed, UserError
from pfca_jax.train import job_store


def _manager(directory: str, **options) -> ocp.CheckpointManager:
  # One layout for every reader and writer: the train state as a PyTree, the meta record as JSON.
  return ocp.CheckpointManager(directory, options=ocp.CheckpointManagerOptions(**options),
                               item_handlers={'state': ocp.PyTreeCheckpointHandler(),
                                              'meta': ocp.JsonCheckpointHandler()})


@contextlib.contextmanager
def reading(workdir: str):
  """(manager, latest step) of WORKDIR/checkpoints, read-only and closed on exit; (None, None) without one.

  The manager writes nothing (no folder is created); the step is None when no checkpoint is complete.
  """
  directory = os.path.join(os.path.abspath(workdir), 'checkpoints')
  if not os.path.isdir(directory):
    yield None, None
    return
  manager = _manager(directory, read_only=True, create=False)
  try:
    yield manager, manager.latest_step()
  finally:
    manager.close()


def restore(manager: ocp.CheckpointManager, step: int, target=None, *, partial: bool = False,
            state: bool = True) -> tuple[object, dict]:
  """(state, meta) of checkpoint `step`: the one function that reads a checkpoint.

  target: the abstract tree (jax.ShapeDtypeStructs with shardings) the state is placed as; None: the
    stored tree as NumPy arrays. partial: only the subtrees of `target` (the parameters and BatchNorm
    statistics without the optimiser state, for inference). state=False: the meta record alone.
  """
  args = {'meta': ocp.args.JsonRestore()}
  if state:
    if target is None:  # NumPy arrays in the stored tree's structure: no device placement to get wrong.
      stored = manager.item_metadata(step)['state'].tree
      restore_args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), stored)
    else:
      restore_args = ocp.checkpoint_utils.construct_restore_args(target)
      # A checkpoint written before runs kept a moving average has no `ema` entry; a run without one
      # (ema={}) has nothing to read there, and a partial restore reads everything else as before.
      if not partial and not jax.tree.leaves(getattr(target, 'ema', None)):
        partial = 'ema' not in manager.item_metadata(step)['state'].tree
    args['state'] = ocp.args.PyTreeRestore(item=target, restore_args=restore_args, partial_restore=partial)
  restored = manager.restore(step, args=ocp.args.Composite(**args))
  return (restored['state'] if state else None), dict(restored['meta'])


def describe(error: Exception) -> str:
  """One line for what orbax, TensorStore or JSON raised: the OS error where there is one, else the first line."""
  text = str(error)
  code = re.search(r"os_error_code='?(\d+)", text)
  if code:  # TensorStore wraps the OS error in a long message naming its internal files.
    return f'{os.strerror(int(code.group(1)))} (errno {code.group(1)})'
  if isinstance(error, OSError) and error.strerror:
    return f'{error.strerror} (errno {error.errno})'
  first = next((line.strip() for line in text.splitlines() if line.strip()), '')
  return f'{type(error).__name__}: {first[:200]}' if first else type(error).__name__


def restore_newest(manager: ocp.CheckpointManager, target=None, *, partial: bool = False, state: bool = True):
  """(step, state, meta, damaged) of the newest checkpoint that restores; None when there is no checkpoint.

  damaged: [(step, why)] of the newer ones that did not restore. Raises UserError naming every step and
  the cause when none restores, so that a run with checkpoints never starts again from scratch unasked.
  """
  damaged = []
  for step in sorted(manager.all_steps(), reverse=True):
    try:
      restored_state, meta = restore(manager, step, target, partial=partial, state=state)
    except Exception as e:  # noqa: BLE001 -- a damaged checkpoint raises JSON, TensorStore, Value and Key errors.
      damaged.append((step, describe(e)))
      continue
    return step, restored_state, meta, damaged
  if damaged:
    found = '; '.join(f'step {step}: {why}' for step, why in damaged)
    raise UserError(f'no checkpoint in {manager.directory} can be read ({found}); to start this run afresh, '
                    'move that folder away or give a new --workdir')
  return None


def read_latest_meta(workdir: str) -> tuple[int, dict] | None:
  """(step, meta) of WORKDIR's newest readable checkpoint, reading only its small JSON record; None when there is none."""
  with reading(workdir) as (manager, step):
    if step is None:
      return None
    step, _, meta, _ = restore_newest(manager, state=False)
    return step, meta


class TrainingStopped(Exception):
  """Training stopped on request (SIGTERM, Ctrl-C, a preemption notice) after checkpointing its step."""

  def __init__(self, message: str, signal_number: int):
    super().__init__(message)
    # What a shell reports for a process ended by that signal (128 + its number), so that scripts and
    # schedulers see an unfinished run.
    self.exit_status = 128 + signal_number


# In the name of the folder orbax writes a step into, renamed to the bare step once the save is complete.
_UNFINISHED = '.orbax-checkpoint-tmp'


class CheckpointSaveFailed(RunFailed):
  """A checkpoint could not be written (disk full, folder unwritable); the older ones are intact."""
  exit_status = 4


class Checkpoints:
  """Saves every call to `save` (the caller decides when), keeps the last `keep`."""

  def __init__(self, workdir: str, keep: int):
    self.workdir = os.path.abspath(workdir)
    self.directory = os.path.join(self.workdir, 'checkpoints')  # Orbax needs absolute paths.
    self._remove_unfinished_saves()
    self._manager = _manager(self.directory, max_to_keep=keep, create=True)
    self._in_flight = None  # The step of the asynchronous save not yet known to be complete.
    self._closed = False

  def _remove_unfinished_saves(self) -> None:
    """Deletes the temporary folders of saves that a kill or a full disk interrupted, before they pile up.

    Orbax's own `cleanup_tmp_directories` does this in the background and completes it only at the
    first save, which a run killed early never reaches: done here, it is done on every start.
    """
    if jax.process_index() == 0 and os.path.isdir(self.directory):
      for name in os.listdir(self.directory):
        if _UNFINISHED in name:
          shutil.rmtree(os.path.join(self.directory, name), ignore_errors=True)
    if jax.process_count() > 1:
      job_store.barrier(f'unfinished saves removed in {self.directory}')

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def restore(self, abstract_state, warn: Callable[[str], None]) -> tuple[int, object, dict] | None:
    """(step, state, meta) of the newest checkpoint that restores, placed as `abstract_state` says; None
    when there is none. Newer, damaged ones are moved to WORKDIR/damaged_checkpoints/ and named to `warn`."""
    found = restore_newest(self._manager, abstract_state)
    if found is None:
      return None
    step, state, meta, damaged = found
    for bad_step, why in damaged:
      # Out of the way of the steps this run will save again, and of max_to_keep's deletions.
      moved = self._set_aside(bad_step)
      warn(f'warning: the checkpoint of step {bad_step} cannot be read ({why}); it was moved to {moved} and '
           f'training resumes from the checkpoint of step {step}')
    if damaged:
      self._manager.reload()
    return step, state, meta

  def _set_aside(self, step: int) -> str:
    target = os.path.join(self.workdir, 'damaged_checkpoints', str(step))
    if jax.process_index() == 0:
      suffix = 1
      while os.path.exists(target):  # The same step damaged twice: keep both.
        suffix += 1
        target = os.path.join(self.workdir, 'damaged_checkpoints', f'{step}-{suffix}')
      os.makedirs(os.path.dirname(target), exist_ok=True)
      shutil.move(os.path.join(self.directory, str(step)), target)
    if jax.process_count() > 1:
      job_store.barrier(f'checkpoint {step} set aside in {self.directory}')
    return target

  def save(self, step: int, state, meta: dict) -> None:
    """Starts an asynchronous save; the arrays are copied off the device before this returns.

    Raises CheckpointSaveFailed for this save or for the previous one, whose failure surfaces here.
    """
    self._wait()
    try:
      self._manager.save(step, args=ocp.args.Composite(
          state=ocp.args.PyTreeSave(state), meta=ocp.args.JsonSave(meta)), force=True)
    except Exception as e:  # noqa: BLE001 -- OS, TensorStore and orbax errors alike.
      raise self._failed(step, e) from None
    self._in_flight = step

  def _wait(self) -> None:
    step, self._in_flight = self._in_flight, None
    try:
      self._manager.wait_until_finished()
    except Exception as e:  # noqa: BLE001 -- the background save's error, whatever its type.
      raise self._failed(step, e) from None

  def _failed(self, step: int | None, error: Exception) -> CheckpointSaveFailed:
    try:
      self._manager.reload()
      kept = [s for s in self._manager.all_steps() if s != step]
    except Exception:  # noqa: BLE001 -- the folder may be unreadable too: say nothing about what is kept.
      kept = None
    older = ('no earlier checkpoint was saved' if kept == [] else 'the older checkpoints are untouched' if kept is None
             else f'the older checkpoints are intact, the latest is step {max(kept)}')
    return CheckpointSaveFailed(f'saving the checkpoint of step {step} in {self.directory} failed: '
                                f'{describe(error)}; {older}; make room or fix the folder and rerun the same '
                                'command to resume')

  def reached_preemption(self, step: int) -> bool:
    """Multi-process: True on every process at the same step after any of them was told to stop."""
    return self._manager.reached_preemption(step)

  def close(self) -> None:
    """Waits for saves in flight, so that the last one is complete on disk (CheckpointSaveFailed if it is not)."""
    if self._closed:
      return
    self._closed = True
    try:
      self._wait()
    finally:
      self._manager.close()


class StopRequest:
  """Turns SIGTERM (preemption, `kill`) and SIGINT (Ctrl-C) into a request to checkpoint and stop.

  With one process the signals are caught here. With several, JAX's distributed runtime owns SIGTERM
  and agrees on a common step (`Checkpoints.reached_preemption`): installing a Python handler would
  take the signal away from it, so none is installed.
  """

  def __init__(self, checkpoints: Checkpoints):
    self._checkpoints = checkpoints
    self._flag = threading.Event()
    self._previous = {}
    self.signal_name = None
    self.signal_number = int(signal.SIGTERM)  # A multi-process preemption notice arrives as SIGTERM.
    if jax.process_count() == 1 and threading.current_thread() is threading.main_thread():
      for sig in (signal.SIGTERM, signal.SIGINT):
        self._previous[sig] = signal.signal(sig, self._handle)

  def _handle(self, signum, frame):
    del frame
    self.signal_name = signal.Signals(signum).name
    self.signal_number = int(signum)
    if self._flag.is_set():  # A second Ctrl-C means now.
      raise KeyboardInterrupt
    self._flag.set()

  def __call__(self, step: int) -> bool:
    if jax.process_count() > 1:
      return self._checkpoints.reached_preemption(step)
    return self._flag.is_set()

  def restore_handlers(self) -> None:
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)
    self._previous = {}
