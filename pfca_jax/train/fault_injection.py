"""Test-only faults at chosen moments of a run: the environment variable PFCA_JAX_FAULT, unset in real runs.

    PFCA_JAX_FAULT=PROCESS:PHASE:STEP:ACTION:SECONDS

PROCESS: a process index or `all`. PHASE: `startup` (the processes have joined; before the restore),
`step` (step STEP has just been dispatched), `save` (the checkpoint of step STEP is being written in
the background), `eval` (the evaluation of step STEP has begun). ACTION: `kill` sends this process
SIGKILL SECONDS later, from a timer, so that the kill lands inside the phase; `stall` sleeps SECONDS
in the training loop's thread, the case of a process alive (its threads and heartbeat still run) that
stops stepping. The multi-process fault trials (tests/test_multihost_faults.py,
experiments/multihost_faults.py) drive it; nothing else reads it.

    PFCA_JAX_INPUT_DELAY_S=SECONDS

A slow input pipeline: every training batch comes SECONDS later (tests/test_time_breakdown.py).
"""

import os
import signal
import threading
import time

import jax

_SPEC = os.environ.get('PFCA_JAX_FAULT', '')


def at(phase: str, step: int = 0) -> None:
  """Applies the fault PFCA_JAX_FAULT names if this process is at that phase and step; else nothing."""
  if not _SPEC:
    return
  process, want_phase, want_step, action, seconds = _SPEC.split(':')
  if want_phase != phase or int(want_step) != step or process not in ('all', str(jax.process_index())):
    return
  if action == 'kill':
    threading.Timer(float(seconds), os.kill, (os.getpid(), signal.SIGKILL)).start()
  elif action == 'stall':
    time.sleep(float(seconds))
  else:
    raise ValueError(f'PFCA_JAX_FAULT={_SPEC!r}: the action must be kill or stall')


def slowed(batches):
  """The training batches, each after a sleep of PFCA_JAX_INPUT_DELAY_S seconds when it is set."""
  delay = float(os.environ.get('PFCA_JAX_INPUT_DELAY_S') or 0)
  if not delay:
    return batches
  return _delayed(batches, delay)


def _delayed(batches, delay: float):
  for batch in batches:
    time.sleep(delay)
    yield batch
