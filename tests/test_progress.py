"""Progress: a bar on a terminal, periodic plain lines elsewhere, nothing from disabled processes."""

import io

from pfca_jax.train import progress


class Terminal(io.StringIO):
  def isatty(self):
    return True


def test_terminal_gets_a_bar_with_rate_and_total():
  stream = Terminal()
  with progress.Progress(10, 'train', 'step', stream=stream) as bar:
    assert bar.is_bar
    for _ in bar.wrap(range(10)):
      pass
    bar.write('a message above the bar')
  text = stream.getvalue()
  assert '10/10' in text and 'step/s' in text and 'a message above the bar' in text
  assert '\r' in text  # Redrawn in place.


def test_log_file_gets_plain_lines_only_when_work_is_long():
  stream = io.StringIO()
  quick = progress.Progress(5, 'eval test', 'batch', stream=stream, interval=30.0)
  assert not quick.is_bar
  for _ in quick.wrap(range(5)):
    pass
  assert stream.getvalue() == ''  # Shorter than the interval: the caller's summary line is enough.
  slow = progress.Progress(3, 'upscale', 'tile', stream=stream, interval=1e-9)
  slow.update(1, psnr='30.1')
  slow.update(2)
  lines = stream.getvalue().splitlines()
  assert lines[0].startswith('upscale: 1/3 tile | psnr 30.1 | ') and 'tile/s | ETA' in lines[0]
  assert lines[-1].startswith('upscale: 3/3 tile')
  assert '\r' not in stream.getvalue()


def test_unknown_total_and_disabled_processes():
  stream = io.StringIO()
  bar = progress.Progress(None, 'eval set5', 'image', stream=stream, interval=1e-9)
  bar.update(2)
  assert stream.getvalue().startswith('eval set5: 2 image | ') and 'ETA ?' in stream.getvalue()
  quiet = Terminal()
  off = progress.Progress(4, 'train', stream=quiet, enabled=False)
  off.update(4)
  off.write('hidden')
  assert not off.is_bar and quiet.getvalue() == ''


def test_durations():
  assert progress.duration(59) == '0m59s' and progress.duration(3600 + 61) == '1h01m'
