"""Joining the processes of a multi-process job: the same command under srun, mpirun, on a TPU pod or by hand.

`--distributed=auto` (the default) joins when JAX's own cluster detection, the one
`jax.distributed.initialize()` uses with no arguments, finds the environment a launcher gives its
tasks (SLURM's srun, Open MPI's mpirun, a Cloud TPU VM pod's workers, a Kubernetes JobSet) and that
environment counts more than one process; or when --coordinator_address is given. The launcher
already says how many processes there are, which one this is and where process 0 runs; nothing of
ours is added to that. `on` always joins (JAX then fails if it finds nothing), `off` never does.
"""

import contextlib
import os
import sys
import traceback

from pfca_jax.cli import coordination_service
from pfca_jax.errors import RunFailed, UserError


class JoinFailed(RunFailed):
  """The processes did not all join within the join timeout (one did not start, or cannot be reached)."""
  exit_status = 5  # As a lost process (pfca_jax.train.watchdog): the launcher may start the job again.


def detected_cluster():
  """The cluster environment JAX's `jax.distributed.initialize()` would use here, or None."""
  from jax._src import clusters  # JAX's detection itself; no public accessor lists it.
  return next((env for env in clusters.ClusterEnv._cluster_types
               if not env.opt_in_only_method and env.is_env_present()), None)


def join(mode: str, coordinator: str | None, num_processes: int | None, process_id: int | None, *,
         join_timeout_s: int, peer_timeout_s: float) -> bool:
  """jax.distributed.initialize when `mode` says so (see the module docstring); whether it joined."""
  import jax  # Only to join: no computation may run before jax.distributed.initialize.
  if mode == 'off':
    return False
  env = detected_cluster() if coordinator is None else None
  if mode == 'auto' and coordinator is None and (env is None or env.get_process_count() < 2):
    return False
  where = coordinator or (env.name if env is not None else 'no launcher found')
  try:
    # Process 0's service lives in a child that outlasts it by `linger_s`: the others learn of its loss.
    with coordination_service.in_a_child_process(linger_s=peer_timeout_s + 30):
      jax.distributed.initialize(coordinator_address=coordinator, num_processes=num_processes,
                                 process_id=process_id, initialization_timeout=join_timeout_s,
                                 # JAX's own detection of a lost process aborts the others with a fatal-error
                                 # dump: it must come after the watchdog's, which ends them in one line.
                                 heartbeat_timeout_seconds=int(max(100, 2 * peer_timeout_s + 30)))
  except ValueError as e:  # Missing or inconsistent numbers: a mistake in the command.
    raise UserError(f'cannot join the processes ({where}): {e}') from None
  except Exception as e:  # noqa: BLE001 -- jaxlib raises its own runtime error types for timeouts.
    first = next((line for line in str(e).splitlines() if line.strip()), type(e).__name__)
    raise JoinFailed(f'the processes did not all join within {join_timeout_s} s (config.join_timeout_s) via '
                     f'{where}: {first[:200]}; start the command on every host (under SLURM, with srun)') from None
  return jax.process_count() > 1


_joined = False

# Config field -> what its value must be: read before the processes join, so checked here.
_TIMEOUTS = {'peer_timeout_s': (float, 'seconds > 0, default 30'), 'step_timeout_s': (float, 'seconds > 0, default 600'),
             'join_timeout_s': (int, 'whole seconds > 0, default 300')}


def check_timeouts(config) -> None:
  for name, (kind, accepted) in _TIMEOUTS.items():
    value = config.get(name)
    if isinstance(value, bool) or not isinstance(value, (int, float) if kind is float else int) or value <= 0:
      raise UserError(f'config.{name}={value!r} must be {accepted}')


@contextlib.contextmanager
def job(config, mode: str = 'auto', coordinator: str | None = None, num_processes: int | None = None,
        process_id: int | None = None):
  """Joins the processes, runs the job's watchdog inside, and tells the other processes how this one ended."""
  global _joined
  check_timeouts(config)
  _joined = join(mode, coordinator, num_processes, process_id, join_timeout_s=config.join_timeout_s,
                 peer_timeout_s=config.peer_timeout_s)
  from pfca_jax.train import watchdog
  watch = watchdog.start(config.peer_timeout_s, config.step_timeout_s, before_exit=_end_service_soon)
  error = None
  try:
    yield watch
  except BaseException as e:
    error = e
    raise
  finally:
    status, line = watchdog.status_of(error)
    watch.finish(status, line)
    if _joined and watchdog.is_clean(status):
      import jax
      jax.distributed.shutdown()  # Every process ends here together; process 0's service then goes too.
    elif _joined and not isinstance(error, (UserError, RunFailed, KeyboardInterrupt)):
      # Not a line `runner.run` prints and `leave` ends on: a bug's traceback, and out at once, not into
      # JAX's shutdown at exit, which would wait for the processes this one has just ended.
      if not isinstance(error, SystemExit):
        traceback.print_exception(error)
      leave(status)


def _end_service_soon() -> None:
  """Process 0 ends the job and has said so in the store: its service need outlive it only until the others read it."""
  from jax._src import distributed
  from pfca_jax.train import watchdog
  if isinstance(distributed.global_state.service, coordination_service.Child):
    distributed.global_state.service.linger(3 * watchdog.BEAT_S + 2)


def leave(status: int) -> None:
  """Exits with `status`. A process of a job that failed leaves at once: JAX's shutdown would wait for the others."""
  from pfca_jax.train import watchdog
  if _joined and not watchdog.is_clean(status):
    _end_service_soon()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)
  sys.exit(status)
