"""A run folder, opened and read in one place: the config of a training run (or of converted weights) and the
weights of its newest readable checkpoint.

`pfca_jax.predict`, `pfca_jax.convert` and `config.init_from` read runs only through here, so a run is
refused, and a damaged checkpoint reported (one `warning:` line on stderr), in the same words everywhere.

A converted folder looks like a run that has not trained: `config.json` (the config the weights are
used with: the model, its attention, the dataset whose preprocessing prediction applies) and one
orbax checkpoint of step 0 holding `params` and `batch_stats`, whose meta record says where they came
from (`converted_from`). The trainer refuses to resume it as a run of its own.
"""

import dataclasses
import hashlib
import json
import os
import sys

import numpy as np

from pfca_jax.errors import UserError

# JAX, orbax and ml_collections are imported where used: refusing a bad workdir starts none of them.

# The command of pfca_jax.predict that serves each task: a run of the other task is refused naming it.
TASK_COMMANDS = {'classification': 'classify', 'super_resolution': 'upscale'}


def checkpoint_steps(workdir: str) -> list[int]:
  """Steps of the complete checkpoints in WORKDIR/checkpoints (orbax renames a folder to its step when done)."""
  directory = os.path.join(workdir, 'checkpoints')
  if not os.path.isdir(directory):
    return []
  return sorted(int(name) for name in os.listdir(directory)
                if name.isdigit() and os.path.isdir(os.path.join(directory, name)))


def _refuse_url(path: str, what: str) -> None:
  """os.path takes 's3://b/run' for the local folder './s3:/b/run': a URL is refused, as the trainer does."""
  if '://' in path:  # Only then: the check's module imports JAX, which refusing a plain path needs not.
    from pfca_jax.train.validation import check_local_path
    check_local_path(path, what)


def open_run(workdir: str, task: str | None = None):
  """The ConfigDict of a training workdir of `task` (None: either task) that holds a checkpoint, or a one-line
  UserError."""
  if not workdir:
    raise UserError('--workdir is required: the folder of a training run (with config.json and checkpoints/)')
  _refuse_url(workdir, '--workdir')
  if not os.path.isdir(workdir):
    raise UserError(f'workdir {workdir!r} does not exist' if not os.path.exists(workdir)
                    else f'workdir {workdir!r} is not a folder')
  path = os.path.join(workdir, 'config.json')
  if not os.path.isfile(path):
    # A comparison (config.compare_attentions) keeps one run per attention in WORKDIR/<attention>/.
    runs = sorted(os.path.join(workdir, name) for name in os.listdir(workdir)
                  if os.path.isfile(os.path.join(workdir, name, 'config.json')))
    if runs:
      raise UserError(f'workdir {workdir!r} has no config.json but holds the runs {", ".join(runs)}: '
                      'pass one of them as --workdir')
    raise UserError(f'workdir {workdir!r} has no config.json: not a training run of pfca_jax.main '
                    '(which writes it when training starts)')
  try:
    with open(path) as f:
      content = json.load(f)
  except (OSError, ValueError) as e:
    raise UserError(f'cannot read {path}: {e}') from None
  run_task = content.get('task') if isinstance(content, dict) else None
  if run_task not in TASK_COMMANDS:
    raise UserError(f'{path} has task={run_task!r}; this command handles {", ".join(TASK_COMMANDS)}')
  if task is not None and run_task != task:
    model = content.get('model', {}).get('name', '?')
    raise UserError(f'workdir {workdir!r} is a {run_task} run ({model}): use `{TASK_COMMANDS[run_task]}`, '
                    f'not `{TASK_COMMANDS[task]}`')
  if not checkpoint_steps(workdir):
    raise UserError(f'workdir {workdir!r} has no checkpoint in {os.path.join(workdir, "checkpoints")} '
                    '(training saves one every checkpoint_every_steps and at its end)')
  import ml_collections
  content.pop('provenance', None)  # What produced the run, not part of its config.
  return ml_collections.ConfigDict(content)


def uses_average(config) -> bool:
  """Whether the run kept a moving average of its weights, which evaluation scored and prediction uses."""
  return config.get('ema_decay', 0.0) > 0


def create_model(config, spec=None):
  """The network of the run: `spec` (a classification dataset's DatasetSpec) gives the number of classes."""
  from pfca_jax.models.from_config import create_model as create
  if config.task == 'super_resolution':
    return create(config, scale=config.scale)
  return create(config, num_classes=spec.num_classes)


@dataclasses.dataclass(frozen=True)
class Weights:
  """The weights of one checkpoint, each as {'params', 'batch_stats'}; `average` is None when not read or not kept."""
  step: int
  trained: dict | None
  average: dict | None
  meta: dict


def _paths_and_shapes(tree) -> dict[str, tuple]:
  import jax
  leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
  return {jax.tree_util.keystr(path, simple=True, separator='.'): tuple(leaf.shape) for path, leaf in leaves}


def _check_fits(wanted: dict, stored: dict, directory: str) -> None:
  """Names the first parameter where the checkpoint and the model of config.json disagree (before orbax fails
  in its background threads, which log tracebacks)."""
  wanted = _paths_and_shapes(wanted)
  stored = _paths_and_shapes({k: stored.get(k, {}) for k in ('params', 'batch_stats')})
  for name in sorted(wanted.keys() | stored.keys()):
    if wanted.get(name) != stored.get(name):
      found = 'absent' if name not in stored else f'of shape {stored[name]}'
      needed = 'has no such parameter' if name not in wanted else f'needs {wanted[name]}'
      raise UserError(f'the checkpoint in {directory} does not fit the model of config.json: {name} is {found} '
                      f'there, and the model {needed}')


def read_weights(workdir: str, target: dict | None = None, *, average: bool = False) -> Weights:
  """The weights of the newest readable checkpoint of a run or converted folder; a damaged newer one is skipped
  with one warning line on stderr.

  target: None reads the trained weights and the moving average (when kept) as NumPy arrays. Otherwise
    the abstract {'params', 'batch_stats'} (jax.ShapeDtypeStructs with shardings) the weights are placed
    as, checked against the checkpoint first; only that set is read (the moving average when `average`),
    never the optimiser state.
  """
  import jax
  from pfca_jax.train import checkpointing
  directory = os.path.join(os.path.abspath(workdir), 'checkpoints')
  with checkpointing.reading(workdir) as (manager, step):
    if step is None:
      raise UserError(f'workdir {workdir!r} has no complete checkpoint in {directory}')
    if target is not None:
      try:
        stored = dict(manager.item_metadata(step)['state'].tree)
        stored = dict(stored.get('ema') or {}) if average else stored
      except Exception:  # noqa: BLE001 -- a damaged checkpoint: restore_newest below names it and moves on.
        stored = None
      if stored is not None:  # A checkpoint of another model: said by name, not as damage.
        _check_fits(target, stored, directory)
    used, restored, meta, damaged = checkpointing.restore_newest(
        manager, None if target is None else {'ema': target} if average else target, partial=target is not None)
  for bad_step, why in damaged:
    print(f'warning: the checkpoint of step {bad_step} in {directory} cannot be read ({why}); '
          f'using the checkpoint of step {used}', file=sys.stderr, flush=True)
  if target is not None:
    weights = dict(restored['ema'] if average else restored)
    return Weights(used, None if average else weights, weights if average else None, meta)
  trained = {k: restored.get(k) or {} for k in ('params', 'batch_stats')}
  kept = restored.get('ema') or {}
  return Weights(used, trained, kept if jax.tree.leaves(kept) else None, meta)


def restore_variables(workdir: str, model, input_shape, average: bool = False) -> dict:
  """{'params', 'batch_stats'} of `model` from the newest readable checkpoint, on this process's first device.

  The target tree comes from the model itself, so the optimiser state is never read (nor its config
  needed), and its explicit one-device sharding lets a checkpoint written on 8 devices load on 1.
  average: the moving average of the weights (a run with config.ema_decay > 0), as evaluation scored.
  """
  import jax
  from pfca_jax.train import sharding
  shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), jax.numpy.zeros(input_shape), train=False))
  placement = sharding.replicated(sharding.create_mesh(jax.local_devices()[:1]))
  target = jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=placement),
                        {'params': shapes['params'], 'batch_stats': shapes.get('batch_stats', {})})
  weights = read_weights(workdir, target, average=average)
  return weights.average if average else weights.trained


def check_new_folder(out: str) -> str:
  """The absolute path of `out`, refused when it already holds anything (nothing is ever overwritten)."""
  if not out:
    raise UserError('--out is required: the folder to write the converted weights to')
  _refuse_url(out, '--out')
  path = os.path.abspath(os.path.expanduser(out))
  if os.path.isfile(path):
    raise UserError(f'--out={out!r} is a file; give a new folder')
  if os.path.isdir(path) and os.listdir(path):
    raise UserError(f'--out={out!r} is a folder that is not empty; give a new folder (nothing is overwritten)')
  return path


def sha256(path: str) -> str:
  digest = hashlib.sha256()
  with open(path, 'rb') as f:
    for block in iter(lambda: f.read(1 << 20), b''):
      digest.update(block)
  return digest.hexdigest()


def write(out: str, config, variables: dict, source: dict) -> None:
  """Writes `variables` ({'params', 'batch_stats'}) and `config` as the converted folder `out`."""
  import jax
  from pfca_jax.train import checkpointing, reporting, run_identity
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


def num_classes(weights: dict) -> int | None:
  """The width of a ResNet's classifier (`fc`), from the weights themselves."""
  kernel = weights['params'].get('fc', {}).get('kernel')
  return None if kernel is None else int(np.shape(kernel)[-1])
