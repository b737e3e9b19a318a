"""Progress of long work (training, evaluation, tiled upscaling): a bar on a terminal, log lines elsewhere.

On a terminal a person watches: a tqdm bar with rate and ETA, redrawn in place, and any message
printed above it. In a log file or a CI capture a redrawn bar is noise, so there the same work prints
a plain line at most every `interval` seconds (and at the end), with the same rate and ETA.
"""

import sys
import time
from typing import TextIO

from tqdm import tqdm


def duration(seconds: float) -> str:
  seconds = int(max(seconds, 0))
  h, rest = divmod(seconds, 3600)
  m, s = divmod(rest, 60)
  return f'{h}h{m:02d}m' if h else f'{m}m{s:02d}s'


def is_terminal(stream: TextIO) -> bool:
  try:
    return stream.isatty()
  except (AttributeError, ValueError):  # Closed or stream-like objects without a file descriptor.
    return False


class Progress:
  """Counts `total` units of work named `desc`.

  Args:
    total: units in all (steps, images, tiles); None when unknown (no ETA then).
    desc: what is being done, shown before the count.
    unit: the unit's name in the rate.
    initial: units already done (a resumed run).
    bar: force the bar (True) or the lines (False); None: a bar when `stream` is a terminal.
    interval: seconds between plain lines, the first one after `interval` seconds and a last one at
      the end if any was printed (work shorter than that prints nothing); 0 prints only the last
      one; None never prints one (the caller prints its own, as the trainer does at its log steps).
    enabled: False makes every call a no-op (processes other than the first).
    leave: keep the finished bar on screen (False for work nested in a longer one, like evaluation).
  """

  def __init__(self, total: int | None, desc: str, unit: str = 'it', *, initial: int = 0, bar: bool | None = None,
               interval: float | None = 30.0, stream: TextIO | None = None, enabled: bool = True,
               leave: bool = True):
    self.stream = stream or sys.stdout
    self.enabled = enabled
    self.total, self.desc, self.unit, self.interval = total, desc, unit, interval
    self.done = initial
    self._start_done, self._start = initial, time.perf_counter()
    self._last_line = self._start
    self._lines = 0
    use_bar = is_terminal(self.stream) if bar is None else bar
    self._bar = (tqdm(total=total, initial=initial, desc=desc, unit=unit, file=self.stream, dynamic_ncols=True,
                      smoothing=0.1, leave=leave) if enabled and use_bar else None)

  @property
  def is_bar(self) -> bool:
    return self._bar is not None

  def rate(self) -> float:
    elapsed = time.perf_counter() - self._start
    return (self.done - self._start_done) / elapsed if elapsed > 0 else float('nan')

  def eta(self) -> str:
    rate = self.rate()
    return duration((self.total - self.done) / rate) if rate > 0 and self.total is not None else '?'

  def wrap(self, iterable):
    """Yields the items of `iterable`, counting one unit per item."""
    for item in iterable:
      yield item
      self.update(1)

  def update(self, n: int = 1, **postfix) -> None:
    if not self.enabled:
      return
    self.done += n
    if self._bar is not None:
      if postfix:
        self._bar.set_postfix(postfix, refresh=False)
      self._bar.update(n)
      return
    now = time.perf_counter()
    last = self.total is not None and self.done >= self.total and (self._lines or self.interval == 0)
    if self.interval is not None and (last or (self.interval > 0 and now - self._last_line >= self.interval)):
      self._last_line = now
      self._lines += 1
      extra = ''.join(f' | {k} {v}' for k, v in postfix.items())
      count = f'{self.done}/{self.total}' if self.total is not None else f'{self.done}'
      self.stream.write(f'{self.desc}: {count} {self.unit}{extra} | {self.rate():,.2f} '
                        f'{self.unit}/s | ETA {self.eta()}\n')
      self.stream.flush()

  def write(self, text: str) -> None:
    """Prints a message line without breaking the bar."""
    if not self.enabled:
      return
    if self._bar is not None:
      self._bar.write(text, file=self.stream)
    else:
      self.stream.write(text + '\n')
      self.stream.flush()

  def close(self) -> None:
    if self._bar is not None:
      self._bar.close()
      self._bar = None

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()
