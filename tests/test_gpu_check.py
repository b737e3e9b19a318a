"""experiments/gpu_check.py, the one command a lent GPU machine runs, shrunk (--small) on this CPU: both
networks train, are killed after their half-way checkpoint, resume to a final state equal bit for bit, and
are timed against the bench. Device time is scarce: the script must not first fail there."""

import json
import os
import subprocess
import sys

import pytest
from conftest import REPO


@pytest.mark.slow
def test_small_gpu_check_trains_kills_resumes_exactly_and_times_both_networks(tmp_path):
  env = {k: v for k, v in os.environ.items() if k != 'XLA_FLAGS'}  # One CPU device, as on a user's machine.
  done = subprocess.run([sys.executable, 'experiments/gpu_check.py', '--small', f'--out={tmp_path}', '--seconds=900'],
                        cwd=REPO, env=env, capture_output=True, text=True, timeout=1000)
  assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
  with open(tmp_path / 'gpu_check.json') as f:
    report = json.load(f)
  assert report['size'] == 'small' and [row['model'] for row in report['rows']] == ['resnet18', 'msrresnet_x4']
  for row in report['rows']:
    assert row['run']['returncode'] == 0 and row['killed']['killed'] and row['killed']['returncode'] == -9, row
    assert row['resume']['bit_identical'] and row['resume']['steps'] == [24, 24] and row['resume']['arrays'] > 100
    assert row['trainer_images_per_sec'] > 0 and row['bench_images_per_sec'] > 0 and 'loop_cost' in row
  assert done.stdout.count(' True') == 2  # The table's "resume exact" column.
