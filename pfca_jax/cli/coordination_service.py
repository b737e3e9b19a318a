"""JAX's coordination service in a process of its own, beside process 0, so that losing process 0 does not abort the others.

`jax.distributed.initialize` starts the service (the key-value store, barriers, heartbeats) inside
process 0. When process 0 dies, every other process's client polls an error from the gone service and
JAX terminates it at once with a fatal-error dump (exit 134), before anything of ours can run. Held by
a small child process instead, the service outlives process 0 for as long as the others need it to
find out, through the job's watchdog (pfca_jax/train/watchdog.py), that process 0 was lost, and to end
in one line: `linger_s` seconds, after which the child exits. When process 0 ends well it shuts the
service down at once (`jax.distributed.shutdown`).

`in_a_child_process()` wraps `jax.distributed.initialize`: JAX asks for its service through
jaxlib's `get_distributed_runtime_service`, and gets this module's `Child` with the same arguments
instead. Nothing else of JAX's joining (cluster detection, the client, the preemption sync) changes.

    python -m pfca_jax.cli.coordination_service BIND_ADDRESS NUM_PROCESSES HEARTBEAT_S SHUTDOWN_S LINGER_S

is the child; its standard input is its tie to process 0: the line `shutdown` shuts the service down,
`linger S` shortens the linger (process 0 ends the job itself and has said so in the store), and end
of file (process 0 is gone, however it went) starts the linger.
"""

import contextlib
import os
import signal
import subprocess
import sys
import time


class Child:
  """Process 0's handle on the child holding the service: what JAX keeps as its service object."""

  def __init__(self, bind_address: str, num_processes: int, heartbeat_timeout: int, shutdown_timeout: int,
               linger_s: float):
    self.process = subprocess.Popen(
        [sys.executable, '-m', __name__, bind_address, str(num_processes), str(heartbeat_timeout),
         str(shutdown_timeout), str(linger_s)],
        stdin=subprocess.PIPE, text=True,
        # Its own process group: a Ctrl-C on the terminal must not take the service from under the job.
        start_new_session=True)

  def linger(self, seconds: float) -> None:
    """Process 0 is about to end the job, which the others learn from the store at once: linger only this long."""
    try:
      self.process.stdin.write(f'linger {seconds}\n')
      self.process.stdin.flush()
    except OSError:
      pass

  def shutdown(self) -> None:
    """Every process has ended well: the service shuts down now."""
    try:
      self.process.stdin.write('shutdown\n')
      self.process.stdin.close()
    except OSError:
      pass  # The child is gone already.
    self.process.wait()


@contextlib.contextmanager
def in_a_child_process(linger_s: float):
  """Inside, jaxlib's get_distributed_runtime_service starts the service in a `Child` (only process 0 asks)."""
  from jax._src.lib import _jax  # Where jax.distributed looks the function up at each call.
  original = _jax.get_distributed_runtime_service

  def child_service(address, num_nodes, heartbeat_timeout=100, cluster_register_timeout=None, shutdown_timeout=300,
                    recoverable=False):
    del cluster_register_timeout, recoverable  # Not set by jax.distributed.initialize / off by default.
    return Child(address, num_nodes, heartbeat_timeout, shutdown_timeout, linger_s)

  _jax.get_distributed_runtime_service = child_service
  try:
    yield
  finally:
    _jax.get_distributed_runtime_service = original


def _serve(bind_address: str, num_processes: int, heartbeat_timeout: int, shutdown_timeout: int,
           linger_s: float) -> None:
  from jax._src.lib import _jax
  # A preemption notice or a Ctrl-C reaches every process of a job step, this one too: the trainers save
  # and end on it, and need the service until they have.
  signal.signal(signal.SIGTERM, signal.SIG_IGN)
  signal.signal(signal.SIGINT, signal.SIG_IGN)
  service = _jax.get_distributed_runtime_service(bind_address, num_processes, heartbeat_timeout=heartbeat_timeout,
                                                  shutdown_timeout=shutdown_timeout)
  for line in sys.stdin:
    if line.strip() == 'shutdown':
      service.shutdown()
      return
    if line.startswith('linger '):
      linger_s = float(line.split()[1])
  # Process 0 is gone: the others still read the store to learn it (within linger_s), then need nothing more.
  time.sleep(linger_s)
  os._exit(0)  # Not service.shutdown(): it would wait for the clients that will never call it.


if __name__ == '__main__':
  _bind, _count, _heartbeat, _shutdown, _linger = sys.argv[1:]
  _serve(_bind, int(_count), int(_heartbeat), int(_shutdown), float(_linger))
