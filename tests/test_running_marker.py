"""WORKDIR/running.json: a live job's marker refuses a second job in one line; a killed job's marker, a
reused pid's, a silent one of another host and a damaged one let it through; release deletes only its own."""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest
from conftest import REPO

from pfca_jax.train import running_marker
from pfca_jax.errors import UserError
from pfca_jax.train.running_marker import MARKER, Marker, refusal

JOB = {'processes': 4, 'coordinator': '10.0.0.1:1234'}

# Holds a marker in a process of its own until killed.
_HOLDER = """
import sys, time
from pfca_jax.train.running_marker import Marker
Marker(sys.argv[1], {'processes': 1}, interval_s=3600)
print('ready', flush=True)
time.sleep(60)
"""


def read(workdir):
  with open(os.path.join(workdir, MARKER)) as f:
    return json.load(f)


def write(workdir, marker):
  with open(os.path.join(workdir, MARKER), 'w') as f:
    json.dump(marker, f)


def recorded(workdir, **changes):
  """A genuine marker of this process (written by a Marker, then released), with CHANGES, as the file in WORKDIR."""
  marker = Marker(workdir, JOB, interval_s=3600)
  record = read(workdir)
  marker.release()
  record.update(changes)
  write(workdir, record)
  return record


def timed_refusal(workdir, **kwargs):
  start = time.monotonic()
  message = refusal(str(workdir), **kwargs)
  return message, time.monotonic() - start


@pytest.fixture
def holder(tmp_path):
  """A subprocess holding a marker of tmp_path, and its Popen."""
  process = subprocess.Popen([sys.executable, '-c', _HOLDER, str(tmp_path)], cwd=REPO, stdout=subprocess.PIPE, text=True)
  try:
    assert process.stdout.readline() == 'ready\n'
    yield process
  finally:
    process.kill()
    process.wait()
    process.stdout.close()


def test_no_marker_is_no_refusal(tmp_path):
  assert refusal(str(tmp_path)) is None


def test_a_live_job_of_this_host_is_refused_at_once_in_one_line(tmp_path):
  marker = Marker(str(tmp_path), JOB)
  try:
    message, took = timed_refusal(tmp_path)
  finally:
    marker.release()
  assert took < 1
  assert message == (f'{tmp_path} is being trained by another job: process {os.getpid()} on host {socket.gethostname()} '
                     f'(started {read_started(message)}, 4 processes); stop that job or give another --workdir '
                     f'(if it is gone, delete {tmp_path / MARKER})')
  assert refusal(str(tmp_path)) is None  # Released.


def read_started(message):
  """The time a message says its job started, checked to be an ISO UTC time."""
  started = message.split('(started ')[1].split(',')[0]
  time.strptime(started, '%Y-%m-%dT%H:%M:%SZ')
  return started


def test_a_killed_job_is_let_through_at_once(tmp_path, holder):
  assert f'process {holder.pid} on host' in refusal(str(tmp_path))
  holder.send_signal(signal.SIGKILL)
  holder.wait()
  before = read(tmp_path)
  message, took = timed_refusal(tmp_path)
  assert message is None and took < 1
  assert read(tmp_path) == before  # Read-only: the stale marker stays until a Marker replaces it.


def test_a_killed_job_not_yet_reaped_is_let_through(tmp_path, holder):
  holder.send_signal(signal.SIGKILL)
  for _ in range(200):  # The kill is asynchronous: wait (at most 2 s) for the process to be a zombie.
    with open(f'/proc/{holder.pid}/stat') as f:
      if f.read().rsplit(')', 1)[1].split()[0] == 'Z':
        break
    time.sleep(0.01)
  else:
    pytest.fail(f'process {holder.pid} is no zombie after SIGKILL')
  assert refusal(str(tmp_path)) is None


@pytest.mark.skipif(not os.path.exists('/proc/self/stat'), reason='start times come from /proc')
def test_a_reused_pid_is_let_through(tmp_path):
  record = recorded(str(tmp_path))
  assert record['start_time'] is not None
  assert refusal(str(tmp_path)) is not None  # The genuine record: this process, alive.
  write(str(tmp_path), dict(record, start_time=record['start_time'] + 1))
  message, took = timed_refusal(tmp_path)
  assert message is None and took < 1


def test_a_silent_marker_of_another_host_is_stale_after_watching(tmp_path):
  recorded(str(tmp_path), host='other-host')
  message, took = timed_refusal(tmp_path, observe_s=0.6)
  assert message is None
  assert took >= 0.6  # It watched for a beat rather than decide from the pid, which is alive here.


def test_a_beating_marker_of_another_host_is_refused_once_it_beats(tmp_path):
  marker = Marker(str(tmp_path), JOB, interval_s=0.05, host='other-host')
  try:
    message, took = timed_refusal(tmp_path, observe_s=5)
    assert read(tmp_path)['beat'] > 0
  finally:
    marker.release()
  assert f'process {os.getpid()} on host other-host (started ' in message
  assert took < 2  # At the first beat seen, not at the end of observe_s.


@pytest.mark.parametrize('field', ['boot_id', 'pid_namespace'])
def test_a_host_name_shared_with_another_boot_or_container_is_watched(tmp_path, field):
  # A live pid here, but not the writer's process: only the beat can tell.
  recorded(str(tmp_path), **{field: 'not-this-one'})
  message, took = timed_refusal(tmp_path, observe_s=0.6)
  assert message is None and took >= 0.6


@pytest.mark.parametrize('contents', [
    b'', b'{"host": "node07", "pid"', b'not json', b'[1, 2]', b'"running"', b'\xff\xfe\x00',
])
def test_a_damaged_marker_is_stale(tmp_path, contents):
  with open(tmp_path / MARKER, 'wb') as f:
    f.write(contents)
  message, took = timed_refusal(tmp_path)
  assert message is None and took < 1


@pytest.mark.parametrize('changes', [{'pid': 0}, {'pid': -1}, {'pid': str(os.getpid())}, {'pid': True},
                                     {'beat': None}, {'host': None}])
def test_a_marker_with_wrong_fields_is_stale(tmp_path, changes):
  # Each is this live process's genuine record but for one field, which would otherwise be refused.
  recorded(str(tmp_path), **changes)
  message, took = timed_refusal(tmp_path)
  assert message is None and took < 1


def test_release_deletes_its_own_marker_only_and_may_be_repeated(tmp_path):
  marker = Marker(str(tmp_path), JOB, interval_s=0.05)
  marker.release()
  marker.release()
  assert os.listdir(tmp_path) == []

  marker = Marker(str(tmp_path), JOB, interval_s=3600)
  os.remove(tmp_path / MARKER)
  marker.release()  # Deleted by hand meanwhile: nothing to do.
  assert os.listdir(tmp_path) == []

  marker = Marker(str(tmp_path), JOB, interval_s=3600)
  theirs = dict(read(tmp_path), token='another-job')
  write(str(tmp_path), theirs)
  marker.release()
  assert read(tmp_path) == theirs
  assert os.listdir(tmp_path) == [MARKER]


def test_the_beat_advances_and_stops_at_release(tmp_path):
  marker = Marker(str(tmp_path), JOB, interval_s=0.02)
  first = read(tmp_path)
  time.sleep(0.2)
  second = read(tmp_path)
  marker.release()
  assert second['beat'] > first['beat'] and second['beat_time'] > first['beat_time']
  assert {k: v for k, v in second.items() if k not in ('beat', 'beat_time')} == {
      k: v for k, v in first.items() if k not in ('beat', 'beat_time')}
  assert first['job'] == JOB and first['pid'] == os.getpid() and first['host'] == socket.gethostname()
  assert not marker._thread.is_alive()
  assert not os.path.exists(tmp_path / MARKER)


def test_the_module_does_not_import_jax():
  code = f'import sys; sys.path.insert(0, {REPO!r}); import {running_marker.__name__}; assert "jax" not in sys.modules'
  subprocess.run([sys.executable, '-c', code], check=True, cwd=REPO)


def test_claim_refuses_a_live_job_and_replaces_a_stale_marker(tmp_path, holder):
  # A live job of this host holds the workdir: refused in one line, and its marker is left as it was.
  before = read(tmp_path)
  with pytest.raises(UserError) as refused:
    running_marker.claim(str(tmp_path), JOB)
  assert str(refused.value) == refusal(str(tmp_path)) and '\n' not in str(refused.value)
  assert read(tmp_path) == before
  holder.kill()
  holder.wait()
  # Its process killed, the marker is stale: the next job claims the workdir.
  marker = running_marker.claim(str(tmp_path), JOB)
  try:
    assert read(tmp_path)['pid'] == os.getpid() and read(tmp_path)['token'] != before['token']
  finally:
    marker.release()
  assert not os.path.exists(tmp_path / MARKER)


def test_an_exclusive_marker_never_overwrites_another(tmp_path):
  first = Marker(str(tmp_path), JOB, interval_s=3600, exclusive=True)
  try:
    with pytest.raises(FileExistsError):
      Marker(str(tmp_path), JOB, interval_s=3600, exclusive=True)
    assert read(tmp_path)['token'] == first._marker['token']
    assert os.listdir(tmp_path) == [MARKER]  # No temporary file left behind by the refused write.
  finally:
    first.release()
