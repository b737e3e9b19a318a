"""What writing TensorBoard logs costs the trainer: tensorboardX against the hand-made writer it replaced.

The hand-made writer is `pfca_jax/train/event_file.py` of commit d7a8653 (read with `git show`); tensorboardX
is opened as `pfca_jax.train.reporting.summary_writer` opens it. Measured, each writer in the same process:

- import: seconds and resident memory (MB) that importing the writer adds to a process that has already
  imported the trainer's reporting module (JAX, NumPy), as the trainer does; median over --repeats fresh
  processes. tensorboardX is timed twice: as `import tensorboardX` (which imports PyTorch where it is
  installed) and as the trainer imports it (PyTorch hidden).
- scalars: --log_steps log steps of the six train scalars, with the four evaluation scalars every 20th.
- images: super-resolution sample panels (LR | bicubic | SR | HR of a real photo): three of Set5's size
  (512x2048) and one of a DIV2K validation image's (1356x8160).

Each write is timed as its calls return, and again up to `close()`, which tensorboardX needs to finish
the writing its thread does. The markdown report goes to stdout:

    python experiments/tensorboard_writer.py > experiments/results/tensorboard_writer.md
"""

import datetime
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from pfca_jax.cli import runner  # noqa: E402 -- after the path above.
from pfca_jax.train import reporting  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OLD_COMMIT = 'd7a8653'

IMPORT = '''
import json, sys, time
from pfca_jax.train import reporting

def rss_mb():
  with open('/proc/self/statm') as f:
    return int(f.read().split()[1]) * 4096 / 2**20

before, t0 = rss_mb(), time.perf_counter()
{statement}
print(json.dumps({{'seconds': time.perf_counter() - t0, 'mb': rss_mb() - before,
                  'torch': 'torch' in sys.modules, 'tensorflow': 'tensorflow' in sys.modules}}))
'''

IMPORTS = {
    'hand-made writer': 'exec(sys.argv[1])',
    'tensorboardX (`import tensorboardX`)': 'import tensorboardX',
    'tensorboardX (as the trainer imports it)': 'reporting._import_tensorboardx()',
}


def old_writer_source() -> str:
  return subprocess.run(['git', 'show', f'{OLD_COMMIT}:pfca_jax/train/event_file.py'], cwd=REPO, check=True,
                        capture_output=True, text=True).stdout


def old_writer_module():
  spec = importlib.util.spec_from_loader('event_file', loader=None)
  module = importlib.util.module_from_spec(spec)
  exec(old_writer_source(), module.__dict__)
  return module


def measure_import(statement: str, repeats: int) -> dict:
  runs = []
  for _ in range(repeats):
    out = subprocess.run([sys.executable, '-c', IMPORT.format(statement=statement), old_writer_source()],
                         cwd=REPO, check=True, capture_output=True, text=True).stdout
    runs.append(json.loads(out.strip().splitlines()[-1]))
  return {'seconds': statistics.median(r['seconds'] for r in runs), 'mb': statistics.median(r['mb'] for r in runs),
          'torch': runs[0]['torch'], 'tensorflow': runs[0]['tensorflow']}


class OldWriter:
  """The hand-made EventFile behind the calls Reporter makes."""

  def __init__(self, logdir, module):
    self._file = module.EventFile(logdir)

  def add_scalar(self, tag, value, step):
    self._file.write_scalars(step, {tag: value})

  def add_image(self, tag, image, step, dataformats):
    self._file.write_images(step, {tag: image})

  def close(self):
    self._file.close()


def photo_panel(height: int, width: int) -> np.ndarray:
  """A real photo tiled to HEIGHTxWIDTH: PNG compresses it as it compresses a sample panel."""
  from skimage import data
  photo = data.astronaut()
  reps = (-(-height // photo.shape[0]), -(-width // photo.shape[1]), 1)
  return np.ascontiguousarray(np.tile(photo, reps)[:height, :width])


def time_writes(make_writer, writes) -> dict:
  with tempfile.TemporaryDirectory() as logdir:
    writer = make_writer(logdir)
    t0 = time.perf_counter()
    writes(writer)
    calls = time.perf_counter() - t0
    writer.close()
    return {'calls': calls, 'closed': time.perf_counter() - t0}


def scalar_writes(log_steps: int):
  def writes(writer):
    for step in range(1, log_steps + 1):
      for tag in ('loss', 'accuracy', 'lr', 'grad_norm', 'images_per_sec', 'epoch'):
        writer.add_scalar(f'train/{tag}', 1.0 / step, step)
      if step % 20 == 0:
        for tag in ('top1', 'top5', 'loss', 'examples'):
          writer.add_scalar(f'eval/test/{tag}', 0.5, step)
  return writes


def image_writes(panels):
  def writes(writer):
    for i, panel in enumerate(panels):
      writer.add_image(f'samples/set/{i}', panel, 1, dataformats='HWC')
  return writes


def machine() -> str:
  model = next((line.split(':', 1)[1].strip() for line in subprocess.run(['lscpu'], capture_output=True,
               text=True).stdout.splitlines() if line.startswith('Model name')), platform.processor())
  return (f'{model}, {os.cpu_count()} cores, Python {platform.python_version()}, load average '
          f'{os.getloadavg()[0]:.1f} at the start')


def main(argv=None):
  parser = runner.Parser(description=__doc__.split('\n')[0])
  parser.add_argument('--repeats', type=int, default=3, help='fresh processes per import measurement')
  parser.add_argument('--log_steps', type=int, default=500, help='log steps of scalars written')
  args = parser.parse_args(argv)
  import tensorboardX
  try:
    import importlib.metadata as metadata
    torch = metadata.version('torch')
  except metadata.PackageNotFoundError:
    torch = 'not installed'
  print('# TensorBoard logs: tensorboardX against the hand-made writer\n')
  print(f'Machine: {machine()}. tensorboardX {tensorboardX.__version__}, PyTorch {torch}, '
        f'no `crc32c` package (both writers compute CRC-32C in Python).  ')
  print(f'Date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC. Hand-made writer: '
        f'`pfca_jax/train/event_file.py` of commit {OLD_COMMIT}.\n')
  print(f'    python experiments/tensorboard_writer.py --repeats={args.repeats} --log_steps={args.log_steps}\n')

  print(f'## Import (median of {args.repeats} processes, after JAX and NumPy)\n')
  print('| writer | seconds | resident MB | imports PyTorch | imports TensorFlow |')
  print('|---|---|---|---|---|')
  for name, statement in IMPORTS.items():
    result = measure_import(statement, args.repeats)
    print(f'| {name} | {result["seconds"]:.2f} | {result["mb"]:.0f} | {result["torch"]} | {result["tensorflow"]} |')

  old = old_writer_module()
  writers = {'hand-made writer': lambda logdir: OldWriter(logdir, old), 'tensorboardX': reporting.summary_writer}
  loads = {
      f'{args.log_steps} log steps of scalars': scalar_writes(args.log_steps),
      '3 sample panels 512x2048': image_writes([photo_panel(512, 2048)] * 3),
      '1 sample panel 1356x8160': image_writes([photo_panel(1356, 8160)]),
  }
  print('\n## Writing (seconds: as the calls return / up to close)\n')
  print('| load | ' + ' | '.join(writers) + ' |')
  print('|---|' + '---|' * len(writers))
  for load, writes in loads.items():
    cells = [time_writes(make, writes) for make in writers.values()]
    print(f'| {load} | ' + ' | '.join(f'{c["calls"]:.3f} / {c["closed"]:.3f}' for c in cells) + ' |')


if __name__ == '__main__':
  sys.exit(runner.run(main))
