"""Converted weights as a folder the rest of the project reads, and a run's weights as a PyTorch file.

A converted folder looks like a run that has not trained: `config.json` (the config the weights are
used with: the model, its attention, the dataset whose preprocessing prediction applies) and one
orbax checkpoint of step 0 holding `params` and `batch_stats`, whose meta record says where they came
from (`converted_from`). `python -m pfca_jax.predict ... --workdir=DIR` and `--config.init_from=DIR` read
it; the trainer refuses to resume it as a run of its own.
"""

import hashlib
import os

import jax
import numpy as np

from pfca_jax.errors import UserError
from pfca_jax.train import checkpointing, reporting, run_identity


def check_new_folder(out: str) -> str:
  """The absolute path of `out`, refused when it already holds anything (nothing is ever overwritten)."""
  if not out:
    raise UserError('--out is required: the folder to write the converted weights to')
  path = os.path.abspath(os.path.expanduser(out))
  if os.path.isfile(path):
    raise UserError(f'--out {out!r} is a file; give a new folder')
  if os.path.isdir(path) and os.listdir(path):
    raise UserError(f'--out {out!r} is a folder that is not empty; give a new folder (nothing is overwritten)')
  return path


def sha256(path: str) -> str:
  digest = hashlib.sha256()
  with open(path, 'rb') as f:
    for block in iter(lambda: f.read(1 << 20), b''):
      digest.update(block)
  return digest.hexdigest()


def write(out: str, config, variables: dict, source: dict) -> None:
  """Writes `variables` ({'params', 'batch_stats'}) and `config` as the converted folder `out`."""
  record = run_identity.to_record(config)
  # One set of weights, no moving average beside it: predict reads them as a run without one.
  record['ema_decay'] = 0.0
  os.makedirs(out, exist_ok=True)
  state = {'params': variables['params'], 'batch_stats': variables.get('batch_stats', {})}
  checkpoints = checkpointing.Checkpoints(out, keep=1)
  try:
    checkpoints.save(0, jax.tree.map(np.asarray, state), {'step': 0, 'config': record, 'converted_from': source})
  finally:
    checkpoints.close()
  reporting.write_json(out, 'config.json', dict(record, converted_from=source))


def read_weights(workdir: str) -> tuple[int, dict, dict | None, dict]:
  """(step, trained weights, moving-average weights or None, meta record) of the newest readable checkpoint
  of a run or converted folder, the weights as {'params', 'batch_stats'} of NumPy arrays."""
  with checkpointing.reading(workdir) as (manager, step):
    if step is None:
      raise UserError(f'{workdir} has no complete checkpoint in {os.path.join(workdir, "checkpoints")}')
    step, stored, meta, damaged = checkpointing.restore_newest(manager)
  for bad_step, why in damaged:
    print(f'warning: the checkpoint of step {bad_step} cannot be read ({why}); using the one of step {step}',
          flush=True)
  trained = {k: stored.get(k) or {} for k in ('params', 'batch_stats')}
  average = stored.get('ema') or {}
  return step, trained, (average if jax.tree.leaves(average) else None), meta


def num_classes(weights: dict) -> int | None:
  """The width of a ResNet's classifier (`fc`), from the weights themselves."""
  kernel = weights['params'].get('fc', {}).get('kernel')
  return None if kernel is None else int(np.shape(kernel)[-1])
