"""Two JAX processes on localhost, as on a 2-host TPU VM: the real command line, per-process data
shares, collectives over gloo, one results.json, every eval example counted once."""

import json
import os
import socket
import subprocess
import sys

from pfca_jax.data import fake_data

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def test_two_processes_train_evaluate_and_checkpoint(tmp_path):
  data_dir = str(tmp_path / 'tfds')
  fake_data.write_fake_dataset('cifar100', data_dir, {
      'train': fake_data.fake_examples('cifar100', 64, seed=0),
      'test': fake_data.fake_examples('cifar100', 11, seed=1)})  # 11: the processes' shares differ by one.
  workdir = str(tmp_path / 'run')
  port = free_port()
  env = dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=2')  # 4 devices in all.
  procs = [subprocess.Popen(
      [sys.executable, '-m', 'pfca_jax.main', '--config=configs/cifar100_resnet20.py:pfca', f'--workdir={workdir}',
       f'--config.data_dir={data_dir}', '--config.batch_size=16', '--config.eval_batch_size=8',
       '--config.num_train_steps=3', '--config.log_every_steps=1', '--config.eval_every_steps=3',
       '--config.checkpoint_every_steps=3', f'--coordinator_address=127.0.0.1:{port}', '--num_processes=2',
       f'--process_id={i}'], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
      for i in range(2)]
  outputs = []
  try:
    for p in procs:
      outputs.append(p.communicate(timeout=300)[0])
  finally:
    for p in procs:  # A peer that never connects would leave the other waiting.
      p.kill()
  for p, out in zip(procs, outputs):
    assert p.returncode == 0, out[-3000:]
  assert '4 device(s) over 2 process(es)' in outputs[0]
  assert 'step 3/3' in outputs[0] and 'step 3/3' not in outputs[1]  # Only process 0 prints.
  results = json.load(open(os.path.join(workdir, 'results.json')))
  assert results['processes'] == 2 and results['devices'] == 4 and results['steps'] == 3
  assert results['final']['eval/test/examples'] == 11
  assert os.listdir(os.path.join(workdir, 'checkpoints')) == ['3']
