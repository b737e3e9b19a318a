"""WORKDIR/metrics.jsonl: the one place that writes it and reads it back.

One JSON object per line, {"step": S, "train/loss": ..., ...}, appended by the trainer at every log
and evaluation step. A run killed mid-write (SIGKILL, a full disk) can leave a torn last line with no
newline; `repair_tail`, called when a run (re)starts, ends it with a newline so that the resumed run's
lines are not glued onto it. Nothing is ever deleted, so nothing a run logged is lost: `read` skips
the torn fragments (and any other line that is not a metrics record) and reports them in one warning
per file.
"""

import json
import os
import sys
from typing import Callable

_SHOWN = 10  # Line numbers listed in the warning; a file full of garbage should not flood the terminal.


def append(path: str, step: int, scalars: dict) -> None:
  """Appends {"step": step, **scalars} as one line, in one write so a kill tears at most this line."""
  line = json.dumps({'step': int(step), **{k: float(v) for k, v in scalars.items()}}) + '\n'
  # os.write rather than a buffered file: a buffered writer may split a long line into several writes.
  fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
  try:
    os.write(fd, line.encode('utf-8'))
  finally:
    os.close(fd)


def repair_tail(path: str) -> None:
  """Ends a torn last line with a newline; a no-op on a missing, empty or clean file."""
  try:
    with open(path, 'rb') as f:
      f.seek(0, os.SEEK_END)
      if f.tell() == 0:
        return
      f.seek(-1, os.SEEK_END)
      if f.read(1) == b'\n':
        return
  except FileNotFoundError:
    return
  with open(path, 'ab') as f:
    f.write(b'\n')


def warn_on_stderr(message: str) -> None:
  """`read`'s default warning: one line on stderr (looked up on each call, so redirections apply)."""
  print(f'warning: {message}', file=sys.stderr, flush=True)


def _is_number(value) -> bool:
  return isinstance(value, (int, float)) and not isinstance(value, bool)


def _record(line: str) -> dict | None:
  """The metrics record on `line`, or None when it is not JSON, not an object or has no integer step."""
  try:
    value = json.loads(line)
  except ValueError:
    return None
  if not isinstance(value, dict):
    return None
  step = value.get('step')
  if not isinstance(step, int) or isinstance(step, bool) or not all(map(_is_number, value.values())):
    return None
  return {'step': step, **{k: float(v) for k, v in value.items() if k != 'step'}}


def read(path: str, warn: Callable[[str], None] = warn_on_stderr) -> list[dict]:
  """The records of `path` in file order: {'step': int, name: float, ...}.

  Lines that are not records are skipped and named in one call of `warn`. Blank lines are ignored,
  and so is an unterminated last line that is not a record: it is the line a live run is writing right
  now (or a torn one, which becomes a line of its own, and is reported, once the run resumes).
  Raises OSError when the file cannot be read.
  """
  # errors='replace': bytes a crash left behind (NULs are valid, other junk is not) make a line
  # that is not JSON, skipped like any torn line, rather than a decoding error for the whole file.
  with open(path, encoding='utf-8', errors='replace') as f:
    lines = f.read().split('\n')
  records, skipped = [], []
  for number, line in enumerate(lines, 1):
    if not line.strip():
      continue
    record = _record(line)
    if record is not None:
      records.append(record)
    elif number < len(lines):  # The last piece of the split has no newline after it.
      skipped.append(number)
  if skipped:
    shown = ', '.join(map(str, skipped[:_SHOWN])) + (', ...' if len(skipped) > _SHOWN else '')
    warn(f'skipped {len(skipped)} torn or non-metrics line(s) of {path}: {shown}')
  return records
