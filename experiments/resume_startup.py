"""Start-up time of a resumed classification input pipeline: at the start and near the end of an epoch.

Prepares a fake ImageNet (real photographs of skimage.data, randomly cropped and resized, stored by
TFDS as JPEG records over many shards, under the real name 'imagenet2012') and times
train_iterator(config, info, start_step=s) up to its first batch for s at the start, the middle
and the last step of an epoch, for the code under test and for the old code of commit 42a8c83
(its classification.py, from `git show`, run against this checkout's other modules): before that
commit's successor, resuming re-read every record of the epoch before the resume point.

    python experiments/resume_startup.py --out=experiments/results/resume_startup.json

Each figure is the median over --repeats fresh iterators in one process, after one untimed
iterator has traced the tf.data functions; the records are in the page cache (a small dataset),
so the figures are the pipeline's own work: with real ImageNet on a disk the old code's re-read
adds reading up to an epoch's share of ~140 GB.
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

import ml_collections
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from pfca_jax.data import classification, fake_data  # noqa: E402 -- after the path above.
from pfca_jax.data.skimage_photos import SPLITS, load_photo  # noqa: E402
from pfca_jax.cli import runner  # noqa: E402

OLD_COMMIT = '42a8c83'


def fake_imagenet(data_dir: str, num_examples: int, num_shards: int, seed: int = 0) -> None:
  """Random crops (1/4 to all of a side) of the nine skimage.data photos, resized to 192-448 px a side."""
  from PIL import Image
  photos = [load_photo(name) for names in SPLITS.values() for name in names]
  rng = np.random.default_rng(seed)

  def example(i):
    photo = photos[i % len(photos)]
    h, w = photo.shape[:2]
    ch, cw = (int(rng.integers(max(s // 4, 16), s + 1)) for s in (h, w))
    top, left = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
    size = tuple(int(s) for s in rng.integers(192, 449, size=2))
    image = Image.fromarray(photo[top:top + ch, left:left + cw]).resize(size, Image.BILINEAR)
    return np.asarray(image), int(rng.integers(1000))

  fake_data.write_fake_dataset('imagenet2012', data_dir, {
      'train': [example(i) for i in range(num_examples)],
      'validation': [example(i) for i in range(num_shards)]}, num_shards=num_shards)


def old_module():
  """classification.py of OLD_COMMIT, importable next to this checkout's other modules."""
  source = subprocess.run(['git', 'show', f'{OLD_COMMIT}:pfca_jax/data/classification.py'], check=True,
                          capture_output=True, text=True, cwd=os.path.dirname(os.path.abspath(__file__))).stdout
  path = os.path.join(tempfile.mkdtemp(), f'classification_{OLD_COMMIT}.py')
  with open(path, 'w') as f:
    f.write(source)
  spec = importlib.util.spec_from_file_location(f'classification_{OLD_COMMIT}', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def first_batch_seconds(module, config, info, start_step: int) -> float:
  start = time.perf_counter()
  batch = next(module.train_iterator(config, info, start_step=start_step))
  seconds = time.perf_counter() - start
  assert batch['image'].shape[0] == config.batch_size
  return seconds


def epoch_seconds(module, config, info, steps: int) -> float:
  iterator = module.train_iterator(config, info)
  start = time.perf_counter()
  for _ in range(steps):
    next(iterator)
  return time.perf_counter() - start


def main(argv=None):
  parser = runner.Parser(description=__doc__.split('\n')[0])
  parser.add_argument('--data_dir', default='/tmp/pfca_resume_startup/tfds')
  parser.add_argument('--num_examples', type=int, default=8192)
  parser.add_argument('--num_shards', type=int, default=32)
  parser.add_argument('--shuffle_buffer_size', type=int, default=512)
  parser.add_argument('--batch_size', type=int, default=32)
  parser.add_argument('--image_size', type=int, default=64)
  parser.add_argument('--repeats', type=int, default=3)
  parser.add_argument('--code', default='old,new', help='comma-separated: old (commit 42a8c83), new (this checkout)')
  parser.add_argument('--epoch', action='store_true', help='also time one whole epoch from step 0')
  parser.add_argument('--out', default='', help='JSON file: a list of runs, this one appended')
  args = parser.parse_args(argv)

  if not os.path.isfile(os.path.join(args.data_dir, 'imagenet2012', '5.1.0', 'dataset_info.json')):
    start = time.perf_counter()
    fake_imagenet(args.data_dir, args.num_examples, args.num_shards)
    print(f'prepared {args.num_examples} records in {args.num_shards} shards in {time.perf_counter() - start:.0f} s',
          flush=True)
  config = ml_collections.ConfigDict(dict(
      dataset='imagenet2012', data_dir=args.data_dir, train_split='train', eval_split='validation',
      image_size=args.image_size, eval_resize_size=args.image_size * 8 // 7, crop_padding=0,
      shuffle_buffer_size=args.shuffle_buffer_size, cache_train=False, seed=0, batch_size=args.batch_size,
      eval_batch_size=args.batch_size))
  info = classification.dataset_info(config)
  spe = classification.steps_per_epoch(info, config)
  folder = os.path.join(args.data_dir, 'imagenet2012', '5.1.0')
  shard_bytes = sum(os.path.getsize(os.path.join(folder, f)) for f in os.listdir(folder) if '-train.' in f)
  starts = [0, spe // 2, spe - 1]
  results = {'date': datetime.date.today().isoformat(), 'machine': machine(), 'command': ' '.join(['python', *sys.argv]),
             'dataset': {'num_examples': info.num_train_examples, 'num_shards': args.num_shards,
                         'train_bytes': shard_bytes, 'steps_per_epoch': spe},
             'config': config.to_dict(), 'repeats': args.repeats, 'first_batch_seconds': {}, 'epoch_seconds': {}}
  for code in args.code.split(','):
    module = old_module() if code == 'old' else classification
    first_batch_seconds(module, config, info, 1)  # Traces the tf.data functions once.
    figures = {}
    for step in starts:
      times = [first_batch_seconds(module, config, info, step) for _ in range(args.repeats)]
      figures[str(step)] = {'median': statistics.median(times), 'all': times}
      print(f'{code}: start_step {step:4d} ({step / spe:4.0%} of the epoch): first batch after '
            f'{statistics.median(times):.2f} s (median of {times})', flush=True)
    results['first_batch_seconds'][code] = figures
    if args.epoch:
      seconds = epoch_seconds(module, config, info, spe)
      results['epoch_seconds'][code] = seconds
      print(f'{code}: one epoch ({spe} steps) from step 0 in {seconds:.1f} s', flush=True)
  if args.out:  # A list of runs: each run is appended.
    runs = []
    if os.path.exists(args.out):
      with open(args.out) as f:
        runs = json.load(f)
    with open(args.out, 'w') as f:
      json.dump(runs + [results], f, indent=1)


def machine() -> dict:
  model = next((line.split(':', 1)[1].strip() for line in subprocess.run(
      ['lscpu'], capture_output=True, text=True).stdout.splitlines() if line.startswith('Model name')), '?')
  return {'cpu': model, 'cores': os.cpu_count(), 'python': platform.python_version(),
          'commit': subprocess.run(['git', 'rev-parse', '--short', 'HEAD'], capture_output=True, text=True,
                                   cwd=os.path.dirname(os.path.abspath(__file__))).stdout.strip()}


if __name__ == '__main__':
  sys.exit(runner.run(main))
