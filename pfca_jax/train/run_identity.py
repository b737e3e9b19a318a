"""A run is its config: what may change when a run is resumed, and the check that refuses everything else.

Every checkpoint records the fully resolved config it was trained with (`checkpointing`). Resuming
compares it field by field with the config of the command that resumes, before anything is compiled:
every field is part of the run's identity (the model and its options, the attention and its options
and position, dtype, dataset, splits, preprocessing and augmentation, batch size, optimiser and its
hyperparameters, schedule, weight decay, seed, and any field added later), except the fields of
`MAY_CHANGE_ON_RESUME` below, each with the reason it cannot change what is trained, the fields of an
optimiser or schedule the run did not use (`READ_ONLY_BY`), and the length (`LENGTH_FIELDS`), which may
change where the learning rate of every step already taken stays the same.
A mismatch is refused with one line per field; nothing in the workdir is touched.

The number of processes and devices is no part of the config: a run continues on any count over which
its global batch splits (`sharding.check_batch_size`) and that keeps its steps per epoch
(`check_process_count`), so that its epochs and learning-rate schedule stay where they were.
"""

import json
import os

import jax
import ml_collections
import numpy as np

from pfca_jax import data
from pfca_jax.data import SYNTHETIC
from pfca_jax.train import checkpointing, config_defaults, optim
from pfca_jax.errors import UserError

# Field -> why changing it between sessions of one run cannot change the parameters it trains.
MAY_CHANGE_ON_RESUME = {
    'log_every_steps': 'how often the console and train/* scalars report; the steps are the same',
    'eval_every_steps': 'when evaluation runs; it reads the parameters and changes nothing',
    'eval_every_epochs': 'when evaluation runs; it reads the parameters and changes nothing',
    'checkpoint_every_steps': 'when checkpoints are written; resuming from any of them is exact',
    'checkpoint_every_epochs': 'when checkpoints are written; resuming from any of them is exact',
    'keep_checkpoints': 'how many old checkpoints stay on disk',
    'eval_batch_size': 'evaluation counts every example whatever the batch (the last one padded and masked)',
    'eval_folders': 'extra evaluation sets, each reported under its own name',
    'eval_num_samples': 'how many sample images evaluation writes',
    'eval_tile': 'super-resolution inference is exact whatever the tile size (tested)',
    'eval_tile_overlap': 'super-resolution inference is exact whatever the tile size (tested)',
    'data_dir': 'where the same prepared dataset is read from (a different dataset is caught by its size)',
    'model.attention_impl': 'fast or reference layers: the same parameters and function (tested equal)',
    'model.conv_impl': 'how convolutions are lowered: the same parameters and function, another kernel',
    'init_from': 'read only when a run starts at step 0; a resumed run continues from its own checkpoint',
    'peer_timeout_s': 'how long a silent process is waited for before the job ends; no step depends on it',
    'step_timeout_s': 'how long a process may go without a step before the job ends; no step depends on it',
    'join_timeout_s': 'how long the processes wait for each other at the start; no step depends on it',
    'profile_steps': 'a profiler trace of some steps reads the run and changes nothing it computes (tested)',
}

# Fields added after runs were first recorded -> the value that gives what those runs did, which a
# record without the field is read as.
ADDED_LATER = {'ema_decay': 0.0, 'init_from': '', 'peer_timeout_s': 30.0, 'step_timeout_s': 600.0,
               'join_timeout_s': 300, 'profile_steps': ''}

# Field -> (setting, choice): an optimiser's or schedule's field, carried only by configs whose `setting`
# is `choice`. Runs recorded while every config carried them all are read without those their optimiser
# and schedule did not read, so that they resume with the configs of today.
READ_ONLY_BY = {field: (setting, choice)
                for setting, fields_of in (('optimizer', config_defaults.OPTIMIZER_FIELDS),
                                           ('schedule', config_defaults.SCHEDULE_FIELDS))
                for choice, fields in fields_of.items() for field in fields}

# May change where the learning rate of every step already taken is unchanged: a 'step', 'constant' or
# 'cosine_restarts' run can be extended (or stopped early), a 'cosine' one, whose decay spans the
# whole length, cannot.
LENGTH_FIELDS = ('num_train_steps', 'num_epochs')

_MISSING = '(absent)'


def to_record(config: ml_collections.ConfigDict) -> dict:
  """The config as plain JSON values (tuples become lists), the form stored in checkpoints and files."""
  return json.loads(json.dumps(config.copy_and_resolve_references().to_dict(), default=str))


def flatten(record: dict, prefix: str = '') -> dict:
  """{'model': {'name': 'x'}} -> {'model.name': 'x'}."""
  flat = {}
  for key, value in record.items():
    if isinstance(value, dict):
      flat.update(flatten(value, f'{prefix}{key}.'))
    else:
      flat[f'{prefix}{key}'] = value
  return flat


def differences(recorded: dict, current: dict, ignore=()) -> list[tuple[str, object, object]]:
  """(field, recorded value, current value) of every field that differs, in name order."""
  old, new = flatten(recorded), flatten(current)
  return [(name, old.get(name, _MISSING), new.get(name, _MISSING)) for name in sorted(old.keys() | new.keys())
          if name not in ignore and old.get(name, _MISSING) != new.get(name, _MISSING)]


def identity_differences(recorded: dict, current: dict) -> list[tuple[str, object, object]]:
  """The differences that make `current` another run than `recorded` (the length is judged apart)."""
  recorded = {**ADDED_LATER, **recorded}
  for field, (setting, choice) in READ_ONLY_BY.items():
    if field in recorded and field not in current and recorded.get(setting) != choice:
      del recorded[field]  # Carried by an older config, never read by this run.
  ignore = [*MAY_CHANGE_ON_RESUME, *LENGTH_FIELDS]
  if SYNTHETIC not in (recorded.get('dataset'), current.get('dataset')):
    # The synthetic data's sizes say nothing about a run on real data (and runs recorded before they existed
    # lack them).
    ignore += [name for name in flatten(recorded).keys() | flatten(current).keys() if name.startswith('synthetic.')]
  return differences(recorded, current, ignore=ignore)


def _show(value) -> str:
  return value if value is _MISSING else repr(tuple(value) if isinstance(value, list) else value)


def refuse(lines: list[str], where: str) -> None:
  raise UserError(f'the run in {where} was trained with another config; resuming it with this one would '
                  'continue a different run:\n' + '\n'.join(f'  {line}' for line in lines)
                  + '\nto train this config, give it a new --workdir; to continue the run, use the values it was '
                    'trained with')


def field_lines(diffs) -> list[str]:
  return [f'{name}: checkpoint {_show(old)}, this run {_show(new)}' for name, old, new in diffs]


def check_config(recorded: dict, config: ml_collections.ConfigDict, where: str) -> None:
  """Refuses (UserError, one line per field) when `config` is not the run `recorded` describes."""
  diffs = identity_differences(recorded, to_record(config))
  if diffs:
    refuse(field_lines(diffs), where)


def check_length(recorded: dict, config: ml_collections.ConfigDict, steps_taken: int, steps_per_epoch: int,
                 where: str) -> None:
  """A changed num_train_steps / num_epochs is accepted when the learning rate of the steps taken stays the same."""
  diffs = differences({k: recorded.get(k) for k in LENGTH_FIELDS}, {k: config.get(k) for k in LENGTH_FIELDS})
  if not diffs:
    return
  before = ml_collections.ConfigDict(recorded)
  old_total = optim.training_length(before, steps_per_epoch)
  new_total = optim.training_length(config, steps_per_epoch)
  if old_total == new_total:
    return
  if new_total < steps_taken:
    refuse(field_lines(diffs) + [f'the checkpoint is at step {steps_taken}, past the {new_total} steps of this run'],
           where)
  steps = np.arange(steps_taken)
  old_rates = np.asarray(optim.create_schedule(before, steps_per_epoch, old_total)(steps))
  new_rates = np.asarray(optim.create_schedule(config, steps_per_epoch, new_total)(steps))
  if not np.array_equal(old_rates, new_rates):
    first = int(np.argmax(old_rates != new_rates))
    refuse(field_lines(diffs) + [
        f'{new_total} steps instead of {old_total} change the {config.schedule} schedule\'s learning rate of steps '
        f'already taken (step {first}: {old_rates[first]:.6g} was used, this run has {new_rates[first]:.6g})'], where)


def recorded_config(meta: dict, workdir: str) -> dict:
  """The config a checkpoint's run was trained with: its meta record's, or for a checkpoint written before
  configs were recorded there, WORKDIR/config.json's."""
  if 'config' in meta:
    return meta['config']
  path = os.path.join(workdir, 'config.json')
  try:
    with open(path) as f:
      record = json.load(f)
  except (OSError, ValueError):
    raise UserError(f'the checkpoint in {workdir} records no config and {path} cannot be read, so whether this '
                    'command continues its run cannot be checked; give this run a new --workdir') from None
  record.pop('provenance', None)
  return record


def check_against_checkpoint(config: ml_collections.ConfigDict, workdir: str):
  """((step, meta), recorded config) of WORKDIR's latest checkpoint after checking that `config` is its run
  (`check_config`); (None, None) when WORKDIR has no checkpoint. Reads, never writes."""
  latest = checkpointing.read_latest_meta(workdir)
  if latest is None:
    return None, None
  source = latest[1].get('converted_from')
  if source is not None:
    raise UserError(f'{workdir} holds weights converted from {source.get("file", "a PyTorch file")} by '
                    f'pfca_jax.convert, not a training run: to train from them, give --config.init_from={workdir} '
                    'and a new --workdir')
  recorded = recorded_config(latest[1], workdir)
  check_config(recorded, config, workdir)
  return latest, recorded


def check_resume(latest: tuple[int, dict], recorded: dict, config: ml_collections.ConfigDict, steps_per_epoch: int,
                 where: str) -> None:
  """Once the dataset is open: the training split's size and the length against the latest checkpoint."""
  step, meta = latest
  if meta.get('steps_per_epoch', steps_per_epoch) != steps_per_epoch:
    check_process_count(meta, config, steps_per_epoch, where)
    refuse([f'steps_per_epoch: checkpoint {meta["steps_per_epoch"]}, this run {steps_per_epoch} (the training '
            f'split {config.train_split!r} of {config.dataset!r} holds another number of examples here)'], where)
  check_length(recorded, config, step, steps_per_epoch, where)


def check_process_count(meta: dict, config: ml_collections.ConfigDict, steps_per_epoch: int, where: str) -> None:
  """Refuses in one line a process count that changes the run's steps per epoch, naming the counts that keep it.

  A process reads whole batches of its own share (N // process_count examples or images), so for some
  sizes the epoch is a step shorter or longer on another number of processes; that would move the
  epochs the data and the learning-rate schedule follow. Does nothing when the process count is not
  the cause (then the split itself changed).
  """
  sessions = meta.get('sessions') or [{}]
  before, now, recorded = sessions[-1].get('process_count'), jax.process_count(), meta['steps_per_epoch']
  if before is None or before == now:
    return
  pipe = data.pipeline(config)
  info = pipe.dataset_info(config)

  def epoch_length(count: int) -> int | None:
    try:
      return pipe.steps_per_epoch(info, config, process_count=count)
    except UserError:  # A share smaller than one batch, or a batch that does not split over `count`.
      return None

  if epoch_length(before) != recorded:
    return
  fits = [n for n in range(1, config.batch_size + 1) if config.batch_size % n == 0 and epoch_length(n) == recorded]
  raise UserError(f'the run in {where} cannot continue on {now} process(es): its epochs are {recorded} steps (it '
                  f'was trained on {before}) and would be {steps_per_epoch} there, which would move its epochs and '
                  f'learning-rate schedule; process counts that continue it: {", ".join(map(str, fits))}')
