"""Orbax checkpoints in WORKDIR/checkpoints, and the preemption signal that asks for one.

Each checkpoint holds the train state and a small JSON record (`meta`): the step, the fully
resolved config the run was trained with (`pfca_jax.train.run_identity` compares it with the config of a
resuming command), the steps per epoch (the training split's size), the best eval metrics so far,
the accumulated wall time and the provenance of every session that trained the run. Orbax writes
into a temporary folder and renames it when complete, so a crash, a kill or a full disk during a
save leaves the previous checkpoints restorable.
"""

import contextlib
import os
import signal
import threading

import jax
import numpy as np
import orbax.checkpoint as ocp


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
    args['state'] = ocp.args.PyTreeRestore(item=target, restore_args=restore_args, partial_restore=partial)
  restored = manager.restore(step, args=ocp.args.Composite(**args))
  return (restored['state'] if state else None), dict(restored['meta'])


def read_latest_meta(workdir: str) -> tuple[int, dict] | None:
  """(step, meta) of WORKDIR's latest checkpoint, reading only its small JSON record; None when there is none."""
  with reading(workdir) as (manager, step):
    return None if step is None else (step, restore(manager, step, state=False)[1])


class TrainingStopped(Exception):
  """Training stopped on request (SIGTERM, Ctrl-C, a preemption notice) after checkpointing its step."""

  def __init__(self, message: str, signal_number: int):
    super().__init__(message)
    # What a shell reports for a process ended by that signal (128 + its number), so that scripts and
    # schedulers see an unfinished run.
    self.exit_status = 128 + signal_number


class Checkpoints:
  """Saves every call to `save` (the caller decides when), keeps the last `keep`."""

  def __init__(self, workdir: str, keep: int):
    self.directory = os.path.join(os.path.abspath(workdir), 'checkpoints')  # Orbax needs absolute paths.
    self._manager = _manager(self.directory, max_to_keep=keep, create=True)

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def restore(self, abstract_state):
    """(state, meta) of the latest checkpoint placed as `abstract_state` says, or None when there is none."""
    step = self._manager.latest_step()
    return None if step is None else restore(self._manager, step, abstract_state)

  def save(self, step: int, state, meta: dict) -> None:
    """Starts an asynchronous save; the arrays are copied off the device before this returns."""
    self._manager.save(step, args=ocp.args.Composite(
        state=ocp.args.PyTreeSave(state), meta=ocp.args.JsonSave(meta)), force=True)

  def reached_preemption(self, step: int) -> bool:
    """Multi-process: True on every process at the same step after any of them was told to stop."""
    return self._manager.reached_preemption(step)

  def close(self) -> None:
    """Waits for saves in flight, so that the last one is complete on disk."""
    self._manager.wait_until_finished()
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
