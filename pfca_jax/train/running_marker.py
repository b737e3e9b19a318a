"""WORKDIR/running.json: the marker that stops a second job from training into a workdir a live job trains.

Process 0 of a job holds a `Marker` while it trains: the file names its host, pid, the pid's start time,
a random token and the job, and a daemon thread rewrites it every `BEAT_INTERVAL_S` s with its `beat`
counter one higher. Before it writes anything, a new job asks `refusal(workdir)`, which refuses while the
marker's job lives and lets a rerun of a killed job through, since its marker is stale:

- Where the reader can see the writer's processes (same host name, kernel boot and pid namespace), the
  marker is stale at once when its pid is dead or a zombie, or alive but started at another time (the
  pid was reused). No waiting.
- Elsewhere (a shared filesystem), it is stale when `beat` does not advance while the reader re-reads
  the file for `observe_s` s. Only the counter is compared: mtimes and clocks of two hosts may disagree,
  and NFS's close-to-open consistency gives each new open the contents of the last close.
- A marker that is missing, unreadable or not a marker is stale: the writer replaces the file whole
  (tmp + os.replace), so a live job's marker is always complete.

`claim` writes the marker as a new file with a hard link, which fails where the file exists (an
atomic step on local filesystems and NFS alike): of two jobs started in the same moment (processes that
failed to join one job) one claims the workdir and the other is refused. A stale marker is deleted
before the claim; a job that deletes a live marker in the instant between another's claim and its own
reading can still pass. It is a guard against the usual mistakes, not a lock.
"""

import json
import logging
import os
import secrets
import socket
import threading
import time

from pfca_jax.errors import UserError

MARKER = 'running.json'
BEAT_INTERVAL_S = 5.0
# How often `refusal` re-reads another host's marker while it watches for a beat.
_POLL_S = 0.5


def _read_text(path: str) -> str | None:
  """The contents of PATH, or None where it cannot be read (missing, or a /proc entry of a gone process)."""
  try:
    with open(path) as f:
      return f.read()
  except (OSError, UnicodeDecodeError):
    return None


def _proc_stat(pid: int) -> list[str] | None:
  """The fields of /proc/PID/stat from the third (state) on, or None where there is no such entry."""
  text = _read_text(f'/proc/{pid}/stat')
  if text is None or ')' not in text:
    return None
  # The second field is the command name in parentheses and may hold spaces and ')': split after the last.
  return text[text.rindex(')') + 1:].split()


def _start_time(pid: int) -> int | None:
  """Field 22 of /proc/PID/stat (clock ticks from boot to the start of PID), or None where /proc lacks it."""
  fields = _proc_stat(pid)
  try:
    return int(fields[22 - 3])
  except (TypeError, IndexError, ValueError):
    return None


def _boot_id() -> str | None:
  """This kernel boot's id: pids and start times of two boots have nothing in common."""
  text = _read_text('/proc/sys/kernel/random/boot_id')
  return text.strip() if text else None


def _pid_namespace() -> str | None:
  """This process's pid namespace: containers on one host may share its name but not their pids."""
  try:
    return os.readlink('/proc/self/ns/pid')
  except OSError:
    return None


def _alive(pid: int) -> bool:
  """Whether PID is a running process of this pid namespace (a zombie is not: it only waits to be reaped)."""
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    return True  # Another user's process: it exists.
  fields = _proc_stat(pid)
  return not (fields and fields[0] == 'Z')


def _utc_now() -> str:
  return time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())


def _load(path: str) -> dict | None:
  """The marker at PATH, or None where it is missing or not a marker (half-written, not JSON, wrong fields)."""
  text = _read_text(path)
  if text is None:
    return None
  try:
    marker = json.loads(text)
  except ValueError:
    return None
  if not isinstance(marker, dict):
    return None
  pid, beat = marker.get('pid'), marker.get('beat')
  # A pid of 0 or below would make os.kill(pid, 0) ask about a process group, not one process.
  if type(pid) is not int or pid <= 0 or type(beat) is not int or not isinstance(marker.get('host'), str):
    return None
  if not isinstance(marker.get('job'), dict):
    marker['job'] = {}
  return marker


def _sees_processes_of(marker: dict) -> bool:
  """Whether this process can see the processes of the marker's writer (its host, boot and pid namespace)."""
  if marker['host'] != socket.gethostname():
    return False
  # Unknown on either side (no /proc) counts as the same: the host name is then all there is to go by.
  for field, here in (('boot_id', _boot_id()), ('pid_namespace', _pid_namespace())):
    if marker.get(field) is not None and here is not None and marker[field] != here:
      return False
  return True


def _local_job_alive(marker: dict) -> bool:
  """Whether the marker's pid, on this host, is alive and the process that wrote it (not a reuse of its pid)."""
  pid = marker['pid']
  if not _alive(pid):
    return False
  recorded, now = marker.get('start_time'), _start_time(pid)
  return recorded is None or now is None or recorded == now


def _message(workdir: str, marker: dict) -> str:
  details = []
  if isinstance(marker.get('started'), str):
    details.append(f'started {marker["started"]}')
  processes = marker['job'].get('processes')
  if isinstance(processes, int):
    details.append(f'{processes} process' + ('' if processes == 1 else 'es'))
  details = f' ({", ".join(details)})' if details else ''
  return (f'{workdir} is being trained by another job: process {marker["pid"]} on host {marker["host"]}{details}; '
          f'stop that job or give another --workdir (if it is gone, delete {os.path.join(workdir, MARKER)})')


def refusal(workdir: str, *, observe_s: float | None = None) -> str | None:
  """Read-only. None when no live job holds WORKDIR (no marker, or a stale one); else the one-line refusal message.

  A marker of this host is decided at once. One of another host takes up to `observe_s` s (default
  3 * BEAT_INTERVAL_S) to be found stale, and returns as soon as its job is seen alive.

  Args:
    workdir: the workdir a job is about to train into.
    observe_s: how long to watch another host's marker for a beat; at least two intervals of its writer.
  """
  observe_s = 3 * BEAT_INTERVAL_S if observe_s is None else observe_s
  path = os.path.join(workdir, MARKER)
  marker = _load(path)
  if marker is None:
    return None
  if _sees_processes_of(marker):
    return _message(workdir, marker) if _local_job_alive(marker) else None
  deadline = time.monotonic() + observe_s
  while (left := deadline - time.monotonic()) > 0:
    time.sleep(min(_POLL_S, left))
    if not os.path.exists(path):
      return None  # Released while we watched.
    now = _load(path)
    if now is None:
      continue  # Unreadable for a moment (NFS may answer a stale handle): the next read decides.
    if now.get('token') != marker.get('token'):
      # Another job wrote the marker meanwhile: decide on it, from the start.
      return refusal(workdir, observe_s=observe_s)
    if now['beat'] != marker['beat']:
      return _message(workdir, now)
  return None


def claim(workdir: str, job: dict, **options) -> 'Marker':
  """A new `Marker` of WORKDIR for this job; UserError with `refusal`'s line where a live job holds it."""
  path = os.path.join(workdir, MARKER)
  for _ in range(3):  # A stale marker deleted, then another job's claim in between: decide again.
    message = refusal(workdir, observe_s=options.pop('observe_s', None))
    if message is not None:
      raise UserError(message)
    try:
      os.remove(path)  # Stale, or gone already.
    except FileNotFoundError:
      pass
    try:
      return Marker(workdir, job, exclusive=True, **options)
    except FileExistsError:
      continue
  raise UserError(f'{workdir} is being claimed by other jobs at the same time as this one; start one job only')


class Marker:
  """Held by process 0 of a job while it trains WORKDIR: writes WORKDIR/running.json and refreshes it every `interval_s` s from a daemon thread.

  Call `refusal(workdir)` first: a Marker replaces whatever marker is there. `release()` when training
  ends, however it ends (a killed job leaves a stale marker, which `refusal` lets through).
  """

  def __init__(self, workdir: str, job: dict, interval_s: float = BEAT_INTERVAL_S, *, host: str | None = None,
               exclusive: bool = False):
    """Writes the marker (tmp + os.replace, so that it is never seen half-written) and starts the refreshing thread.

    Args:
      workdir: the workdir this job trains; it must exist.
      job: what the refusal message and a reader should know of the job, e.g. {'processes': 4,
        'coordinator': '10.0.0.1:1234'}; JSON-serialisable.
      interval_s: seconds between two beats. Readers on other hosts must watch for longer than this.
      host: the host name written; socket.gethostname() by default (tests pose as another host).
      exclusive: raise FileExistsError where a marker is there already (`claim`) instead of replacing it.
    """
    self.path = os.path.join(workdir, MARKER)
    pid = os.getpid()
    self._marker = {
        'host': socket.gethostname() if host is None else host,
        'pid': pid,
        'start_time': _start_time(pid),
        'boot_id': _boot_id(),
        'pid_namespace': _pid_namespace(),
        'token': secrets.token_hex(16),
        'job': dict(job),
        'started': _utc_now(),
        'beat': 0,
        'beat_time': time.time(),
    }
    # Named after the token: two writers on a shared filesystem must not share a temporary file.
    self._tmp = f'{self.path}.{self._marker["token"]}.tmp'
    self._interval_s = interval_s
    self._stop = threading.Event()
    self._warned = False
    self._write(exclusive)  # Raises here, in the caller, when the workdir cannot be written.
    self._thread = threading.Thread(target=self._beat, name='running-marker', daemon=True)
    self._thread.start()

  def _write(self, exclusive: bool = False) -> None:
    with open(self._tmp, 'w') as f:
      json.dump(self._marker, f)
    if not exclusive:
      os.replace(self._tmp, self.path)
      return
    try:
      os.link(self._tmp, self.path)  # Fails where the file exists: no other job's marker is overwritten.
    finally:
      os.remove(self._tmp)

  def _beat(self) -> None:
    while not self._stop.wait(self._interval_s):
      self._marker['beat'] += 1
      self._marker['beat_time'] = time.time()
      try:
        self._write()
      except OSError as e:
        # Training goes on; readers on other hosts may take the marker for stale until a beat succeeds.
        if not self._warned:
          logging.warning('could not refresh %s (%s); will keep trying', self.path, e)
          self._warned = True

  def release(self) -> None:
    """Stops the thread and deletes the marker if it is still ours (same host, pid and token); idempotent."""
    self._stop.set()
    self._thread.join()
    on_disk = _load(self.path)
    ours = on_disk is not None and all(on_disk.get(k) == self._marker[k] for k in ('host', 'pid', 'token'))
    for path in ([self.path] if ours else []) + [self._tmp]:
      try:
        os.remove(path)
      except FileNotFoundError:
        pass

  def __enter__(self) -> 'Marker':
    return self

  def __exit__(self, *exc_info) -> None:
    self.release()
