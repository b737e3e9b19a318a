"""Continuing a run on another number of processes or devices (4 x 2, then 2 x 2, 1 x 1, 4 x 2): the state
restored straight into the new mesh, the interrupted epoch's doubles and misses as documented and none after
it, the counts recorded per session, and a count that cannot continue the run refused before anything is written.
"""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import optax
import pytest
from conftest import REPO, load_repo_module, xla_flags
from flax import linen as nn
from test_multiprocess import div2k_dir, run_processes  # noqa: F401 -- div2k_dir is a fixture.
from test_run_identity import snapshot

from classification_data import config as data_config, take, write_labelled_cifar
from pfca_jax import train
from pfca_jax.data import classification as data
from pfca_jax.data import digits, metadata
from pfca_jax.errors import UserError
from pfca_jax.train import checkpointing, config_defaults, run_identity, sharding, train_state

NUM_TRAIN, BATCH = 96, 8  # 12 steps per epoch on any process count: the split fills whole batches.


@pytest.fixture(scope='module')
def labelled_dir(tmp_path_factory):
  """A prepared cifar100 of 96 train images in 3 files, label i on the i-th image: labels name examples."""
  rng = np.random.default_rng(0)
  images = {split: rng.integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8) for split, n in [('train', 96),
                                                                                               ('test', 4)]}
  return write_labelled_cifar(tmp_path_factory, images, num_shards=3)


def global_batches(cfg, info, processes: int, start: int, steps: int) -> list[dict]:
  """The global batches of steps start .. start + steps - 1 on PROCESSES processes: each process's share, joined."""
  iterators = [data.train_iterator(cfg, info, start, process_index=i, process_count=processes)
               for i in range(processes)]
  shares = [take(it, steps) for it in iterators]
  return [{key: np.concatenate([share[step][key] for share in shares]) for key in ('label', 'image')}
          for step in range(steps)]


def labels(batches) -> list[int]:
  return [int(label) for batch in batches for label in batch['label']]


@pytest.mark.parametrize('before, after, stop', [(4, 2, 5), (2, 1, 9), (1, 4, 3), (4, 2, 12 + 6)])
def test_the_interrupted_epoch_reads_some_examples_twice_and_as_many_not_at_all_and_the_next_epochs_each_once(
    labelled_dir, before, after, stop):
  # What docs/clusters.md says happens when a run stopped at step STOP on BEFORE processes resumes on AFTER.
  cfg = data_config('cifar100', labelled_dir, batch_size=BATCH, shuffle_buffer_size=32)
  info = data.dataset_info(cfg)
  steps = data.steps_per_epoch(info, cfg, process_count=before)
  assert steps == data.steps_per_epoch(info, cfg, process_count=after) == NUM_TRAIN // BATCH
  epoch, k = divmod(stop, steps)
  first = global_batches(cfg, info, before, epoch * steps, k)  # What the checkpointed sessions read of the epoch.
  resumed = global_batches(cfg, info, after, stop, 2 * steps - k)  # The rest of it, then the next epoch, on AFTER.
  # The resumed processes read exactly what a run on AFTER processes from the start reads from that step on.
  always_after = global_batches(cfg, info, after, epoch * steps, 2 * steps)
  for got, want in zip(resumed, always_after[k:], strict=True):
    np.testing.assert_array_equal(got['label'], want['label'])
    np.testing.assert_array_equal(got['image'], want['image'])
  read_before, read_after = labels(first), labels(resumed[:steps - k])
  assert len(set(read_before)) == len(read_before) == k * BATCH  # Neither part reads an example twice...
  assert len(set(read_after)) == len(read_after) == (steps - k) * BATCH
  twice = set(read_before) & set(read_after)  # ...but together they may.
  missed = set(range(NUM_TRAIN)) - set(read_before) - set(read_after)
  assert len(twice) == len(missed) <= min(k, steps - k) * BATCH
  assert twice, 'the two parts of the epoch happen to fit: the case says nothing'
  # The next epoch, on AFTER processes: every example once, in the order of a run that was always on AFTER.
  assert sorted(labels(resumed[steps - k:])) == list(range(NUM_TRAIN))


@pytest.mark.parametrize('num_train, batch', [(96, 8), (1437, 32), (50_000, 128), (1_281_167, 1024), (10, 8)])
def test_a_classification_epoch_has_the_same_steps_on_every_process_count_that_splits_the_batch(num_train, batch):
  # N // P examples per process in batches of B / P: N // B steps whatever P, so an epoch never moves.
  cfg = config_defaults.classification()
  cfg.batch_size = batch
  info = metadata.DatasetInfo(100, num_train, 10, (32, 32, 3))
  counts = [p for p in range(1, batch + 1) if batch % p == 0]
  assert {metadata.steps_per_epoch(info, cfg, process_count=p) for p in counts} == {num_train // batch}


def test_a_process_count_that_changes_the_epoch_length_is_refused_in_one_line_naming_the_counts_that_fit():
  # Super-resolution epochs are patches_per_image passes over each process's N // P images: 6 images
  # make 2 steps of 8 patches on 4 processes (1 image each), 3 on 1 or 2 processes, none on 8.
  config = config_defaults.super_resolution(2)
  config.update(dataset='synthetic', batch_size=8, patches_per_image=4, hr_patch_size=16)
  config.synthetic.train_images = 6
  assert jax.process_count() == 1
  trained_on_four = {'steps_per_epoch': 2, 'sessions': [{'process_count': 4, 'device_count': 8}]}
  with pytest.raises(UserError) as refused:
    run_identity.check_resume((10, trained_on_four), run_identity.to_record(config), config, 3, 'W')
  assert str(refused.value) == (
      'the run in W cannot continue on 1 process(es): its epochs are 2 steps (it was trained on 4) and would be 3 '
      'there, which would move its epochs and learning-rate schedule; process counts that continue it: 4')
  # The same count, or a checkpoint that records none: the split itself changed, said as before.
  for meta in ({'steps_per_epoch': 2, 'sessions': [{'process_count': 1}]}, {'steps_per_epoch': 2}):
    with pytest.raises(UserError, match='steps_per_epoch: checkpoint 2, this run 3'):
      run_identity.check_resume((10, meta), run_identity.to_record(config), config, 3, 'W')


class Tiny(nn.Module):
  @nn.compact
  def __call__(self, x, train=False):
    return nn.BatchNorm(use_running_average=not train)(nn.Dense(3)(x))


@pytest.mark.parametrize('devices', [2, 1])
def test_a_checkpoint_of_eight_devices_is_restored_straight_onto_a_smaller_mesh(tmp_path, devices):
  model, tx = Tiny(), optax.sgd(0.1, momentum=0.9)
  state_on = lambda mesh: train_state.abstract_state(model, tx, (1, 4), 0, mesh)
  eight = sharding.create_mesh()
  assert eight.devices.size == 8
  _, shardings = state_on(eight)
  state = train_state.create_state(model, tx, (1, 4), 0, shardings)
  state = state.replace(step=state.step + 5, params=jax.tree.map(lambda p: p + 1.5, state.params))
  checkpoints = checkpointing.Checkpoints(str(tmp_path), keep=1)
  checkpoints.save(5, state, {'step': 5})
  checkpoints.close()

  smaller = sharding.create_mesh(jax.devices()[:devices])
  target, _ = state_on(smaller)
  checkpoints = checkpointing.Checkpoints(str(tmp_path), keep=1)
  step, restored, meta = checkpoints.restore(target, warn=print)
  checkpoints.close()
  assert (step, meta['step']) == (5, 5)
  for path, leaf in jax.tree_util.tree_leaves_with_path(restored):
    assert leaf.sharding == sharding.replicated(smaller), jax.tree_util.keystr(path)
    assert set(leaf.devices()) == set(jax.devices()[:devices]), jax.tree_util.keystr(path)
  for a, b in zip(jax.tree.leaves(restored), jax.tree.leaves(state), strict=True):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


# --- Through the command: 4 x 2, 2 x 2, 1 x 1, 4 x 2 -------------------------------------------------

SESSIONS = ((4, 2), (2, 2), (1, 1), (4, 2))  # (processes, devices per process)
STEPS = 3  # Per session; 8 (classification) and 2 (super-resolution) steps an epoch: counts change mid-epoch.
SEEDS = (0, 1, 2)  # Uninterrupted runs: a run on one count is bit-reproducible, so the noise is the seeds'.


def continue_on_each_count(fields: dict, workdir: str) -> list[dict]:
  """The sessions of SESSIONS through the command, each STEPS longer than the last; results.json after each."""
  results = []
  for i, (processes, devices) in enumerate(SESSIONS):
    end = STEPS * (i + 1)
    args = command_args(dict(fields, num_train_steps=end, eval_every_steps=end, checkpoint_every_steps=end))
    outputs = run_processes(args + [f'--workdir={workdir}'], processes, dict(os.environ, XLA_FLAGS=xla_flags(devices)))
    assert f'{processes * devices} device(s) over {processes} process(es)' in outputs[0]
    with open(os.path.join(workdir, 'results.json')) as f:
      results.append(json.load(f))
  return results


def command_args(fields: dict) -> list[str]:
  return [f'--config={fields["config"]}'] + [f'--config.{k}={v}' for k, v in fields.items() if k != 'config']


def uninterrupted(fields: dict, seed: int, workdir: str) -> dict:
  """The final metrics of the whole run in one session, in this process (1 process x 8 devices)."""
  config = load_repo_module(fields['config'].split(':')[0]).get_config(fields['config'].split(':')[1])
  end = STEPS * len(SESSIONS)
  config.update(num_train_steps=end, eval_every_steps=end, checkpoint_every_steps=end, seed=seed)
  for key, value in fields.items():
    if key != 'config':
      *path, leaf = key.split('.')
      node = config
      for part in path:
        node = node[part]
      node[leaf] = value
  return train.train_and_evaluate(config, workdir)


def check_resumed_run(results: list[dict], references: list[dict], metric: str) -> None:
  """Steps continue, each session's counts are recorded, and the final metric is within the seeds' noise.

  The bound is coarse: the seeds' range widened by that range on either side, as 12 steps of a tiny
  network are noisy. It does catch a resume that loses the trained state (tried: the super-resolution
  run then ends 0.7 dB below it); experiments/process_count_resume.py measures the noise of longer runs.
  """
  for i, run in enumerate(results):
    assert run['steps'] == STEPS * (i + 1) and run['status'] == 'completed'
    assert [(s['process_count'], s['device_count'], s['start_step']) for s in run['sessions']] == \
        [(p, p * d, STEPS * j) for j, (p, d) in enumerate(SESSIONS[:i + 1])]
    assert (run['processes'], run['devices']) == (SESSIONS[i][0], SESSIONS[i][0] * SESSIONS[i][1])
  values = [r[metric] for r in references]
  noise = max(values) - min(values)
  final = results[-1]['final'][metric]
  assert noise > 0
  assert min(values) - noise <= final <= max(values) + noise, (final, values)


def resumed_and_references(fields: dict, root) -> tuple[list[dict], list[dict]]:
  results = continue_on_each_count(fields, str(root / 'run'))
  return results, [uninterrupted(fields, seed, str(root / f'seed{seed}')) for seed in SEEDS]


@pytest.fixture(scope='module')
def digits_run(tmp_path_factory):
  """(fields, workdir, results.json after each session, uninterrupted final metrics per seed) of a tiny digits run."""
  root = tmp_path_factory.mktemp('digits')
  fields = {'config': 'configs/cifar100_resnet20.py:pfca', 'dataset': digits.NAME, 'data_dir': str(root / 'tfds'),
            'train_split': 'train[:64]', 'image_size': 16, 'crop_padding': 2, 'batch_size': 8,
            'eval_batch_size': 360, 'shuffle_buffer_size': 64, 'log_every_steps': 1,
            'base_learning_rate': 0.32}  # 0.02 at batch 8; at 0.1 BatchNorm's averages end so far off that
  # the evaluation loss of 12 steps reaches 30-150.
  config = config_defaults.classification()
  config.update(dataset=digits.NAME, data_dir=fields['data_dir'], image_size=16)
  data.dataset_info(config)  # Prepared here, once, not by four processes at a time.
  return (fields, str(root / 'run'), *resumed_and_references(fields, root))


@pytest.mark.slow  # 4 + 2 + 1 + 4 JAX processes in turn on 2 cores, and three uninterrupted runs.
def test_classification_continues_on_4x2_then_2x2_1x1_4x2(digits_run):
  _, _, results, references = digits_run
  # The loss only: after 12 steps top-1 is near chance (0.12-0.16 of 10 classes), a resume that lost the
  # state would score the same, and 3 seeds a digit or two apart made its band degenerate (on another CPU
  # model, which rounds differently, the resumed run scored 0.164 against seeds of 0.122-0.133).
  check_resumed_run(results, references, 'eval/test/loss')


@pytest.mark.slow
def test_super_resolution_continues_on_4x2_then_2x2_1x1_4x2(tmp_path, div2k_dir):
  fields = {'config': 'configs/div2k_msrresnet_x2.py:pfca', 'data_dir': div2k_dir, 'batch_size': 8,
            'hr_patch_size': 16, 'patches_per_image': 2, 'shuffle_buffer_size': 16, 'log_every_steps': 1,
            'eval_tile': 12, 'eval_tile_overlap': 2, 'eval_num_samples': 0, 'model.num_feat': 8,
            'model.num_block': 1, 'ema_decay': 0.0, 'base_learning_rate': 1e-2}
  results, references = resumed_and_references(fields, tmp_path)
  check_resumed_run(results, references, 'eval/div2k/psnr_y')


@pytest.mark.slow
@pytest.mark.parametrize('devices, batch_size, message', [
    (3, 8, 'error: batch_size=8 is not a positive multiple of the device count 3 (1 process(es)); it splits over '
           '1, 2, 4, 8 device(s), the counts that can continue a run of this batch; for a new run use e.g. '
           'batch_size=6'),
    (8, 12, 'error: batch_size=12 is not a positive multiple of the device count 8 (1 process(es)); it splits over '
            '1, 2, 3, 4, 6, 12 device(s), the counts that can continue a run of this batch; for a new run use e.g. '
            'batch_size=8')])
def test_a_count_that_cannot_continue_the_run_is_refused_in_one_line_before_anything_is_written(
    digits_run, devices, batch_size, message):
  fields, workdir, _, _ = digits_run
  before = snapshot(workdir), {name: os.stat(os.path.join(workdir, name)).st_mtime_ns for name in os.listdir(workdir)}
  args = command_args(dict(fields, batch_size=batch_size, num_train_steps=15))
  done = subprocess.run([sys.executable, '-m', 'pfca_jax.main', *args, f'--workdir={workdir}'], cwd=REPO,
                        env=dict(os.environ, XLA_FLAGS=xla_flags(devices)), capture_output=True, text=True,
                        timeout=300)
  assert (done.returncode, done.stderr.splitlines()) == (2, [message]), done.stderr[-3000:]
  after = snapshot(workdir), {name: os.stat(os.path.join(workdir, name)).st_mtime_ns for name in os.listdir(workdir)}
  assert after == before
