"""Two JAX processes on localhost, as on a 2-host TPU VM: the real command line, per-process data
shares, collectives over gloo, one results.json, every eval example counted once; for super-resolution,
every image's scores gathered and the means bit-equal to a one-process evaluation."""

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
from conftest import xla_flags
import skimage.data
from PIL import Image

from pfca_jax.data import fake_data
from pfca_jax.data import super_resolution as sr_data
from pfca_jax.imresize import imresize
from pfca_jax.tasks.super_resolution import SuperResolutionTask
from pfca_jax.train import config_defaults

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def run_processes(args, num_processes, env, timeout=300) -> list[str]:
  """`python -m pfca_jax.main ARGS` as num_processes processes on localhost; their outputs, each checked to end well."""
  port = free_port()
  distributed = [f'--coordinator_address=127.0.0.1:{port}', f'--num_processes={num_processes}']
  procs = [subprocess.Popen([sys.executable, '-m', 'pfca_jax.main', *args]
                            + (distributed + [f'--process_id={i}'] if num_processes > 1 else []),
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
           for i in range(num_processes)]
  outputs = []
  try:
    for p in procs:
      outputs.append(p.communicate(timeout=timeout)[0])
  finally:
    for p in procs:  # A peer that never connects would leave the other waiting.
      p.kill()
  for p, out in zip(procs, outputs):
    assert p.returncode == 0, out[-3000:]
  return outputs


@pytest.mark.slow  # Two JAX processes compiling the same programs side by side on 2 cores.
def test_two_processes_train_evaluate_and_checkpoint(tmp_path):
  data_dir = str(tmp_path / 'tfds')
  fake_data.write_fake_dataset('cifar100', data_dir, {
      'train': fake_data.fake_examples('cifar100', 64, seed=0),
      'test': fake_data.fake_examples('cifar100', 11, seed=1)})  # 11: the processes' shares differ by one.
  workdir = str(tmp_path / 'run')
  env = dict(os.environ, XLA_FLAGS=xla_flags(2))  # 4 devices in all.
  outputs = run_processes(
      ['--config=configs/cifar100_resnet20.py:pfca', f'--workdir={workdir}', f'--config.data_dir={data_dir}',
       '--config.batch_size=16', '--config.eval_batch_size=8', '--config.num_train_steps=3',
       '--config.log_every_steps=1', '--config.eval_every_steps=3', '--config.checkpoint_every_steps=3'], 2, env)
  assert '4 device(s) over 2 process(es)' in outputs[0]
  assert 'step 3/3' in outputs[0] and 'step 3/3' not in outputs[1]  # Only process 0 prints.
  results = json.load(open(os.path.join(workdir, 'results.json')))
  assert results['processes'] == 2 and results['devices'] == 4 and results['steps'] == 3
  assert results['final']['eval/test/examples'] == 11
  assert os.listdir(os.path.join(workdir, 'checkpoints')) == ['3']


def photo_crops(n, seed, sizes):
  rng = np.random.default_rng(seed)
  photo = skimage.data.astronaut()
  out = []
  for i in range(n):
    h, w = sizes[i % len(sizes)]
    y, x = rng.integers(0, photo.shape[0] - h), rng.integers(0, photo.shape[1] - w)
    out.append(np.ascontiguousarray(photo[y:y + h, x:x + w]))
  return out


@pytest.fixture(scope='module')
def div2k_dir(tmp_path_factory):
  """A fake div2k x2: 8 train crops, 5 validation crops of two sizes (the processes' shares differ by one)."""
  path = str(tmp_path_factory.mktemp('tfds'))
  pair = lambda hr: (imresize(hr, 0.5), hr)
  fake_data.write_fake_div2k(path, 2, {
      'train': [pair(hr) for hr in photo_crops(8, 0, [(40, 48)])],
      'validation': [pair(hr) for hr in photo_crops(5, 1, [(36, 44), (28, 40)])]})
  return path


@pytest.mark.slow
def test_two_process_sr_evaluation_equals_one_process(tmp_path, div2k_dir):
  folder = tmp_path / 'Set3' / 'HR'
  folder.mkdir(parents=True)
  for i, hr in enumerate(photo_crops(3, 2, [(36, 44)])):  # A div2k size: no more compiling.
    Image.fromarray(hr).save(folder / f'img_{i}.png')
  workdir = str(tmp_path / 'run')
  args = ['--config=configs/div2k_msrresnet_x2.py:pfca', f'--workdir={workdir}', f'--config.data_dir={div2k_dir}',
          f'--config.eval_folders={folder}', '--config.batch_size=8', '--config.hr_patch_size=16',
          '--config.patches_per_image=2', '--config.shuffle_buffer_size=16', '--config.num_train_steps=2',
          '--config.log_every_steps=2', '--config.eval_every_steps=2', '--config.checkpoint_every_steps=2',
          '--config.eval_tile=12', '--config.eval_tile_overlap=2', '--config.eval_num_samples=1',
          '--config.model.num_feat=8', '--config.model.num_block=1']
  env = dict(os.environ, XLA_FLAGS=xla_flags(1))  # One device a process.
  outputs = run_processes(args, 2, env)
  assert '2 device(s) over 2 process(es)' in outputs[0]
  two = json.load(open(os.path.join(workdir, 'results.json')))
  # Resuming the finished run evaluates the same checkpoint again, now in one process, and rewrites results.json.
  run_processes(args, 1, env)
  one = json.load(open(os.path.join(workdir, 'results.json')))
  assert (two['processes'], one['processes']) == (2, 1) and two['steps'] == one['steps'] == 2
  assert [row['name'] for row in two['per_image']['div2k']] == [f'validation_{i:04d}' for i in range(5)]
  assert [row['name'] for row in two['per_image']['Set3']] == ['img_0', 'img_1', 'img_2']
  assert two['per_image'] == one['per_image']  # Every score to the last bit.
  assert two['final'] == one['final'] and two['final']['eval/div2k/images'] == 5
  assert os.listdir(os.path.join(workdir, 'samples', 'div2k')) == ['validation_0000_step2.png']


def test_eval_max_images_keeps_the_same_first_images_for_any_process_count(div2k_dir):
  config = config_defaults.super_resolution(scale=2)
  config.data_dir = div2k_dir
  for max_images in (-1, 0, 3, 4, 9):
    names = []
    for count in (1, 2, 3):
      shares = [list(sr_data.eval_images(config, max_images=max_images, process_index=i, process_count=count))
                for i in range(count)]
      names.append(sorted((image['index'], image['name']) for share in shares for image in share))
    expected = [(i, f'validation_{i:04d}') for i in range(5 if max_images < 0 else min(max_images, 5))]
    assert names == [expected] * 3
    # A folder's round-robin shares.
    folder = [{'name': f'img_{i}'} for i in range(5)]
    shares = [list(SuperResolutionTask._local_share(folder, max_images, process_index=i, process_count=2))
              for i in range(2)]
    assert sorted(image['index'] for share in shares for image in share) == [index for index, _ in expected]
