"""Where a run's time goes (pfca_jax/train/time_breakdown.py) and the profile on request (train/profiling.py)."""

import glob
import gzip
import json
import os
import re
import threading
import time

import jax
import jax.numpy as jnp
import pytest
from conftest import assert_trees_equal, checkpointed_state, load_repo_module

from pfca_jax import train
from pfca_jax.errors import UserError
from pfca_jax.train import profiling, time_breakdown


def test_overlapping_and_nested_compilation_spans_count_once():
  spans = [(0.0, 1.0), (0.2, 0.5), (0.8, 2.0), (3.0, 4.0)]  # A trace nested in a longer one, then a gap.
  assert time_breakdown.covered(spans) == pytest.approx(3.0)
  assert time_breakdown.covered([]) == 0.0


def test_compilation_moves_out_of_the_category_it_happened_in():
  clock = time_breakdown.Clock()
  try:
    inside = time.perf_counter()
    with clock.charge('eval'):
      started = time.perf_counter()
      compiled = jax.jit(lambda x: jnp.sin(x) @ jnp.cos(x).T + 0.123).lower(jnp.ones((64, 64))).compile()
      compile_s = time.perf_counter() - started  # Tracing, lowering and compiling, and the Python around them.
      time.sleep(0.3)
      compiled(jnp.ones((64, 64))).block_until_ready()
    inside = time.perf_counter() - inside
    seconds = clock.lap()
  finally:
    clock.close()
  assert 0.5 * compile_s <= seconds['compile'] <= compile_s
  assert seconds['eval'] >= 0.3 and seconds['eval'] + seconds['compile'] == pytest.approx(inside, abs=0.01)


@pytest.fixture(scope='module')
def busy():
  """A jitted computation of about 0.3 s on this CPU (more when the CPU is shared)."""
  x = jnp.full((256, 256), 1e-3)
  fn = jax.jit(lambda x, n: jax.lax.fori_loop(0, n, lambda i, y: jnp.tanh(y @ x + 0.5), x))
  fn(x, 1).block_until_ready()
  started = time.perf_counter()
  fn(x, 100).block_until_ready()
  n = max(1, round(0.3 / ((time.perf_counter() - started) / 100)))
  return lambda: fn(x, n)


def slow_batches(seconds, arrivals=None):
  while True:
    time.sleep(seconds)
    if arrivals is not None:
      arrivals.append(time.perf_counter())
    yield {}


@pytest.mark.parametrize('input_s', [0.1, 0.9])
def test_a_wait_for_input_counts_only_once_the_device_has_run_out_of_steps(busy, input_s):
  clock = time_breakdown.Clock()
  arrived, finished = [], []

  def note_when_it_has_run(out):  # The test's own view of when the step ended: on a shared CPU it takes longer.
    out.block_until_ready()
    finished.append(time.perf_counter())

  try:
    clock.switch('train_step')
    out = busy()
    clock.dispatched(out)  # The device runs for about 0.3 s, asynchronously.
    waiter = threading.Thread(target=note_when_it_has_run, args=(out,))
    waiter.start()
    clock.next_batch(slow_batches(input_s, arrived))  # Meanwhile the host waits input_s for the next batch.
    waiter.join()  # (The trainer's fetch at a log step.)
    clock.settle_input()
    seconds = clock.lap()
  finally:
    clock.close()
  # Idle from the end of the step to the batch's arrival; a wait that ends before the step does costs nothing.
  idle = arrived[0] - finished[0]
  assert (idle > 0) == (input_s > 0.3), idle  # The case each is named for: the batch came after / before.
  assert seconds['input'] == pytest.approx(max(0.0, idle), abs=0.05)


def quickstart(data_dir, **overrides):
  config = load_repo_module('configs/quickstart.py').get_config('pfca')
  config.update(dict(data_dir=data_dir, batch_size=16, num_train_steps=16, log_every_steps=4, eval_every_steps=8,
                     checkpoint_every_steps=8), **overrides)
  return config


def timed_run(config, workdir):
  started = time.perf_counter()
  train.train_and_evaluate(config, workdir)
  took = time.perf_counter() - started
  with open(os.path.join(workdir, 'results.json')) as f:
    return json.load(f), took


@pytest.fixture(scope='module')
def plain_run(tmp_path_factory):
  """The quick start, shrunk: (its results, the call's wall time, workdir, data_dir)."""
  data_dir = str(tmp_path_factory.mktemp('tfds'))
  workdir = str(tmp_path_factory.mktemp('plain'))
  results, took = timed_run(quickstart(data_dir), workdir)
  return results, took, workdir, data_dir


def test_the_quickstart_time_breakdown_adds_up_to_its_wall_time(plain_run):
  results, took, _, _ = plain_run
  shares = results['time_breakdown']
  assert list(shares) == sorted(time_breakdown.CATEGORIES)
  assert sum(shares.values()) == pytest.approx(1.0, abs=0.01)
  for name in ('startup', 'compile', 'train_step', 'eval', 'checkpoint'):  # Each happened, none swallowed.
    assert shares[name] > 0, name
  assert all(share >= 0 for share in shares.values())
  assert results['goodput'] == shares['train_step']
  session = results['sessions'][-1]['time']
  assert session['time_breakdown'] == shares and session['goodput'] == results['goodput']
  assert 'time' not in results['provenance']
  # The session's clock starts when train_and_evaluate is called and stops before results.json is written.
  assert took - 1.0 < session['wall_s'] <= took


def test_a_slow_input_pipeline_shows_as_input_wait(plain_run, tmp_path, monkeypatch, capsys):
  plain, _, plain_workdir, data_dir = plain_run
  delay = 0.6
  monkeypatch.setenv('PFCA_JAX_INPUT_DELAY_S', str(delay))
  results, _ = timed_run(quickstart(data_dir), str(tmp_path))
  # Steps 2 to 16 each wait for one batch (the first two were read before the first step), while the
  # device runs the step before: it idles for the delay less that step (the plain run's step time).
  step_s = 16 / plain['train_images_per_sec']
  implied = 15 * (delay - step_s) / results['sessions'][-1]['time']['wall_s']
  assert results['time_breakdown']['input'] == pytest.approx(implied, abs=0.10)
  assert plain['time_breakdown']['input'] < results['time_breakdown']['input'] - 0.10
  # Each log line after the first (whose steps waited on the first two batches read at start-up) shows it;
  # the plain run's lines show 0-3%.
  shares = [int(share) for share in re.findall(r'\| input (\d+)% \|', capsys.readouterr().out)]
  assert len(shares) == 4 and min(shares[1:]) >= 15, shares
  assert_trees_equal(checkpointed_state(str(tmp_path)), checkpointed_state(plain_workdir))


def test_a_profile_of_the_steps_asked_for_changes_nothing_trained(plain_run, tmp_path):
  _, _, plain_workdir, data_dir = plain_run
  timed_run(quickstart(data_dir, profile_steps='4:6'), str(tmp_path))
  (folder,) = glob.glob(str(tmp_path / 'plugins' / 'profile' / '*'))
  assert glob.glob(os.path.join(folder, '*.xplane.pb'))  # For TensorBoard's profile plugin and XProf.
  with gzip.open(os.path.join(folder, 'perfetto_trace.json.gz')) as f:
    events = json.load(f)['traceEvents']
  # The two steps, each marked, each with its execution of the train step: its convolutions and the rest.
  rows = load_repo_module('experiments/trace_summary.py').steps(events)
  assert [row['step'] for row in rows] == [5, 6]
  assert all(row['ops'] > 100 and any('conv' in kind for kind in row['by_kind']) for row in rows), rows
  assert_trees_equal(checkpointed_state(str(tmp_path)), checkpointed_state(plain_workdir))


@pytest.mark.parametrize('text, start, message', [
    ('5', 0, "config.profile_steps='5' is not START:END with 0 <= START < END"),
    ('6:6', 0, "config.profile_steps='6:6' is not START:END with 0 <= START < END"),
    ('a:b', 0, "config.profile_steps='a:b' is not START:END"),
    ('10:20', 0, "config.profile_steps='10:20' is outside the steps this session trains (0:16); give a range"),
    ('2:6', 4, "config.profile_steps='2:6' is outside the steps this session trains (4:16, resuming at step 4)"),
])
def test_a_profile_range_outside_the_session_is_refused_in_one_line(text, start, message):
  with pytest.raises(UserError) as error:
    profiling.check(text, start, 16)
  assert str(error.value).startswith(message) and '\n' not in str(error.value)
  profiling.check('4:16', 4, 16)  # The whole session is a range.
