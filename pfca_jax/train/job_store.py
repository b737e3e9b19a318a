"""The job's key-value store: JAX's distributed runtime client, which every process of a joined job holds.

Barriers and agreements go through it rather than through a collective: nothing is compiled for them,
and a collective on CPUs (gloo) gives up on a process that arrives more than 30 s after the others,
which start-ups on a busy host easily are. The watchdog (`watchdog`) beats through it too.
"""

BARRIER_TIMEOUT_S = 3600  # A lost process ends the job through the watchdog long before.


def client():
  """JAX's distributed runtime client, the one `jax.distributed.initialize` made (None in one process)."""
  from jax._src import distributed  # No public accessor; orbax reads the same object.
  return distributed.global_state.client


def barrier(name: str, timeout_s: float = BARRIER_TIMEOUT_S) -> None:
  """Waits until every process has reached the barrier NAME, which must be new to the job; nothing in one process."""
  import jax
  if jax.process_count() > 1:
    client().wait_at_barrier(f'pfca_jax/barrier/{name}', int(timeout_s * 1000))


def decided_by_process_0(key: str, decide):
  """decide()'s answer (a string or None) as process 0 found it, on every process; the others wait for it.

  For a check of a shared file that must come out the same everywhere (the workdir's running marker).
  """
  import jax
  if jax.process_count() == 1:
    return decide()
  key = f'pfca_jax/decided/{key}'
  if jax.process_index() == 0:
    answer = decide()
    client().key_value_set(key, 'none' if answer is None else f'text {answer}')
    return answer
  value = client().blocking_key_value_get(key, BARRIER_TIMEOUT_S * 1000)
  return None if value == 'none' else value.removeprefix('text ')
