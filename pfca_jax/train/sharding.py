"""Data parallelism over every device of every process: one `data` mesh axis, no pmap.

Parameters and optimiser state are replicated; a batch is split along its leading axis. Inside
the jitted step, a BatchNorm's mean over the batch is then a mean over the global batch: XLA inserts
the cross-device reduction, so the statistics are those of one large batch, as with SyncBN.
"""

import collections
import itertools
from typing import Iterable, Iterator

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from pfca_jax.errors import UserError

DATA_AXIS = 'data'


def create_mesh(devices=None) -> Mesh:
  """A 1-D mesh over `devices` (default: every device of every process)."""
  devices = jax.devices() if devices is None else list(devices)
  return Mesh(np.asarray(devices), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharded(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P(DATA_AXIS))


def check_batch_size(name: str, global_batch: int) -> None:
  """The global batch must split evenly over devices (and so over processes).

  A resumed run keeps its global batch (`run_identity`), so the message also names the device counts
  that can continue it; a new run may take another batch instead.
  """
  devices = jax.device_count()
  if global_batch < 1 or global_batch % devices:
    fits = [str(n) for n in range(1, global_batch + 1) if global_batch % n == 0]
    raise UserError(f'{name}={global_batch} is not a positive multiple of the device count {devices} '
                    f'({jax.process_count()} process(es))'
                    + (f'; it splits over {", ".join(fits)} device(s), the counts that can continue a run of '
                       'this batch' if fits else '')
                    + f'; for a new run use e.g. {name}={max(1, global_batch // devices) * devices}')


def to_global(batch: dict, sharding: NamedSharding) -> dict:
  """Assembles each process's share of a batch into one global array split over the mesh."""
  return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), batch)


def prefetch_to_devices(batches: Iterable[dict], sharding: NamedSharding, depth: int = 2) -> Iterator[dict]:
  """Keeps `depth` batches already transferred, so the host-to-device copy overlaps the step."""
  queue = collections.deque()
  it = iter(batches)
  for batch in itertools.islice(it, depth):
    queue.append(to_global(batch, sharding))
  while queue:
    yield queue.popleft()
    for batch in itertools.islice(it, 1):
      queue.append(to_global(batch, sharding))
