"""Training input pipelines' throughput per CPU core, and where one core's time goes (issue 29, item 4).

    python experiments/input_pipeline.py --data_dir=/tmp/pfca_input_data \
        --json=experiments/results/input_pipeline.json

1. Prepares (or reuses) in --data_dir a fake ImageNet of real photos (skimage.data's colour photos
   cropped, flipped, colour-jittered and resized into distinct 500x375 images, stored as JPEG bytes of
   about --jpeg_kb KB each, as the real dataset stores its original files) and a fake DIV2K x4 of
   DIV2K-sized HR photos with MATLAB-bicubic LR, both under the real TFDS names.
2. Times the real training iterators (config_defaults.imagenet(), batch 64; super_resolution(4), its
   batch 16) in a child process pinned with `taskset` to each --cores set, the variants of --variants
   alternating (A B A B ...) over --rounds so that a busy host slows all alike. Reported: the median
   images/s, and the child's CPU time per image (user + system), which contention inflates less.
3. On one core, the cost per image of each step of the ImageNet preprocessing, as cumulative tf.data
   pipelines run sequentially (one core, no parallelism), and the pixel difference between the IDCT
   methods on the 224x224 crops the model sees.
"""

import argparse
import io
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

from pfca_jax.cli import runner

PHOTOS = ('astronaut', 'chelsea', 'coffee', 'rocket', 'hubble_deep_field', 'immunohistochemistry', 'retina',
          'stereo_motorcycle')
IMAGENET_SIZE = (375, 500)  # (height, width) of the fake ImageNet photos.
DIV2K_HR = (1356, 2040)     # A common DIV2K HR size (x4: LR 339 x 510).


# --- Data ---------------------------------------------------------------------


def _photo_variants(count: int, size: tuple[int, int], seed: int, noise: float):
  """`count` distinct uint8 photos of `size`: random crops of skimage's photos, flipped, jittered, resized."""
  from PIL import Image
  from pfca_jax.data.skimage_photos import load_photo
  rng = np.random.default_rng(seed)
  photos = [load_photo(name) for name in PHOTOS]
  height, width = size
  for i in range(count):
    photo = photos[i % len(photos)]
    ph, pw = photo.shape[:2]
    # A window of the output's aspect ratio covering 35-100% of the largest one that fits.
    frac = np.sqrt(rng.uniform(0.35, 1.0))
    ch = int(min(ph, pw * height / width) * frac)
    cw = int(ch * width / height)
    top, left = rng.integers(0, ph - ch + 1), rng.integers(0, pw - cw + 1)
    crop = Image.fromarray(photo[top:top + ch, left:left + cw]).resize((width, height), Image.LANCZOS)
    image = np.asarray(crop, np.float32)
    if rng.random() < 0.5:
      image = image[:, ::-1]
    image = image * rng.uniform(0.85, 1.15, size=3) + rng.uniform(-15, 15)  # Colour and brightness.
    image = image + rng.normal(0, noise, image.shape)  # Grain, as a camera's: real photos compress less.
    yield np.clip(np.round(image), 0, 255).astype(np.uint8)


def _jpeg(image: np.ndarray, quality: int) -> bytes:
  from PIL import Image
  buffer = io.BytesIO()
  Image.fromarray(image).save(buffer, format='JPEG', quality=quality)  # Baseline, 4:2:0, like most ImageNet files.
  return buffer.getvalue()


def prepare_imagenet(data_dir: str, num_train: int, target_kb: float, log) -> dict:
  """Writes imagenet2012 (train: num_train photos, validation: 64) unless present; returns its description."""
  import tensorflow_datasets as tfds
  from pfca_jax.data import fake_data
  marker = os.path.join(data_dir, 'imagenet_prepared.json')
  if os.path.exists(marker):
    return json.load(open(marker))
  images = list(_photo_variants(num_train + 64, IMAGENET_SIZE, seed=0, noise=2.0))
  # The JPEG quality whose mean size on a sample is nearest the target.
  sizes = {q: np.mean([len(_jpeg(im, q)) for im in images[:48]]) / 1000 for q in range(60, 100, 2)}
  quality = min(sizes, key=lambda q: abs(sizes[q] - target_kb))
  rng = np.random.default_rng(1)
  # Bytes go into TFDS's imagenet Image feature unchanged (a numpy array would be re-encoded by TF at q95).
  examples = [(_jpeg(im, quality), int(rng.integers(1000))) for im in images]
  fake_data.write_fake_dataset('imagenet2012', data_dir, {'train': examples[:num_train],
                                                          'validation': examples[num_train:]}, num_shards=4)
  stored = next(iter(tfds.builder('imagenet2012', data_dir=data_dir).as_dataset(
      split='train', decoders={'image': tfds.decode.SkipDecoding()}).take(1)))['image'].numpy()
  if stored[:3] != b'\xff\xd8\xff':
    raise RuntimeError('the stored imagenet2012 images are not JPEG bytes')
  info = {'train_images': num_train, 'size_hw': IMAGENET_SIZE, 'jpeg_quality': quality,
          'mean_kb': float(np.mean([len(e[0]) for e in examples[:num_train]]) / 1000),
          'stored_as': 'JPEG bytes (FF D8 FF), written unchanged by TFDS'}
  json.dump(info, open(marker, 'w'))
  log(f'prepared imagenet2012: {info}')
  return info


def prepare_div2k(data_dir: str, num_train: int, log) -> dict:
  """Writes div2k/bicubic_x4 (train: num_train HR photos of DIV2K's size, validation: 2) unless present."""
  from pfca_jax.data import fake_data
  from pfca_jax.imresize import imresize
  marker = os.path.join(data_dir, 'div2k_prepared.json')
  if os.path.exists(marker):
    return json.load(open(marker))
  pairs = [(imresize(hr, 0.25), hr) for hr in _photo_variants(num_train + 2, DIV2K_HR, seed=2, noise=3.0)]
  fake_data.write_fake_div2k(data_dir, 4, {'train': pairs[:num_train], 'validation': pairs[num_train:]},
                             num_shards=2)
  import glob
  records = glob.glob(os.path.join(data_dir, 'div2k', 'bicubic_x4', '*', 'div2k-train.tfrecord*'))
  info = {'train_images': num_train, 'hr_size_hw': DIV2K_HR, 'scale': 4,
          'mean_pair_mb': sum(os.path.getsize(f) for f in records) / num_train / 1e6}
  json.dump(info, open(marker, 'w'))
  log(f'prepared div2k/bicubic_x4: {info}')
  return info


# --- The real iterators, timed in a pinned child ------------------------------


def _config(pipeline: str, data_dir: str):
  from pfca_jax.train import config_defaults
  if pipeline == 'imagenet':
    config = config_defaults.imagenet()
    config.batch_size = 64
  else:
    config = config_defaults.super_resolution(4)
    # The default 2,000 encoded HR pairs (~4 MB each) would not fit this host; the rate does not depend on it.
    config.shuffle_buffer_size = 100
    config.cache_train = pipeline == 'div2k_cached'
  config.data_dir = data_dir
  return config


def normalize_before(image, mean, std):
  """preprocessing.normalize before 2026-12-04: the same arithmetic, mean and std broadcast from (3,)."""
  import tensorflow as tf
  return (tf.cast(image, tf.float32) / 255.0 - tf.constant(mean, tf.float32)) / tf.constant(std, tf.float32)


def apply_variant(variant: str) -> None:
  """Switches a lever on, in this process only (levers measured before any is made a switch of the code)."""
  import tensorflow as tf
  from pfca_jax.data import epochs, preprocessing
  if variant == 'code':
    return
  if variant == 'before':
    preprocessing.normalize = normalize_before
    return
  if variant == 'integer_fast':
    original = tf.io.decode_and_crop_jpeg
    tf.io.decode_and_crop_jpeg = lambda *a, **k: original(*a, **{**k, 'dct_method': 'INTEGER_FAST'})
    return
  if variant == 'intra_op_default':
    original_options = epochs.read_options

    def read_options():
      options = original_options()
      options.threading.max_intra_op_parallelism = 0
      return options
    epochs.read_options = read_options
    return
  raise SystemExit(f'unknown variant {variant!r}')


def measure_child(pipeline: str, data_dir: str, variant: str, epochs_timed: int) -> dict:
  """images/s of the real train iterator over `epochs_timed` epochs, each without its first batch.

  The first batch of an epoch carries the pipeline's start and the shuffle buffer's fill: on the real
  ImageNet (5,000 steps of 256 an epoch) that is negligible, on 704 images it is not, so it is left out.
  """
  apply_variant(variant)
  from pfca_jax.data import classification as cls_data
  from pfca_jax.data import super_resolution as sr_data
  config = _config(pipeline, data_dir)
  module = cls_data if pipeline == 'imagenet' else sr_data
  info = module.dataset_info(config)
  spe = module.steps_per_epoch(info, config, process_count=1)
  iterator = module.train_iterator(config, info, process_index=0, process_count=1)
  if pipeline == 'div2k_cached':  # The first epoch decodes and fills the cache.
    for _ in range(spe):
      next(iterator)
  seconds, cpu, images = 0.0, 0.0, 0
  for epoch in range(epochs_timed):
    if epoch:  # The rest of a long epoch, untimed.
      for _ in range(spe - min(spe, 40)):
        next(iterator)
    next(iterator)
    t0, c0 = time.perf_counter(), _cpu_seconds()
    for _ in range(min(spe, 40) - 1):
      batch = next(iterator)
      images += len(next(iter(batch.values())))
    seconds += time.perf_counter() - t0
    cpu += _cpu_seconds() - c0
  return {'images_per_s': images / seconds, 'cpu_ms_per_image': 1000 * cpu / images, 'images': images}


def _cpu_seconds() -> float:
  usage = resource.getrusage(resource.RUSAGE_SELF)
  return usage.ru_utime + usage.ru_stime


def run_pinned(cores: str, args: list[str]) -> dict:
  command = ['taskset', '-c', cores, sys.executable, os.path.abspath(__file__), *args]
  result = subprocess.run(command, capture_output=True, text=True, check=False)
  lines = [line for line in result.stdout.splitlines() if line.startswith('RESULT ')]
  if result.returncode or not lines:
    raise RuntimeError(f'{" ".join(command)} failed:\n{result.stderr[-3000:]}')
  return json.loads(lines[-1][len('RESULT '):])


def throughput(data_dir: str, pipelines, cores_sets, variants, rounds: int, epochs_timed: int, log) -> list[dict]:
  rows = []
  for pipeline in pipelines:
    # The variants are levers of the ImageNet preprocessing; DIV2K's epoch (100 steps) is long enough in one.
    pipeline_variants, timed = (variants, epochs_timed) if pipeline == 'imagenet' else (['code'], 1)
    for cores in cores_sets:
      samples = {v: [] for v in pipeline_variants}
      for r in range(rounds):
        for variant in (pipeline_variants if r % 2 == 0 else pipeline_variants[::-1]):
          samples[variant].append(run_pinned(cores, ['--child=throughput', f'--pipeline={pipeline}',
                                                     f'--variant={variant}', f'--data_dir={data_dir}',
                                                     f'--epochs_timed={timed}']))
      for variant, runs in samples.items():
        row = {'pipeline': pipeline, 'cores': cores, 'num_cores': len(cores.split(',')), 'variant': variant,
               'images_per_s_median': statistics.median(s['images_per_s'] for s in runs),
               'cpu_ms_per_image_median': statistics.median(s['cpu_ms_per_image'] for s in runs),
               'images_per_s_rounds': [s['images_per_s'] for s in runs]}
        rows.append(row)
        log(f'{pipeline:<13} cores {cores:<4} {variant:<17} {row["images_per_s_median"]:8.1f} img/s  '
            f'{row["cpu_ms_per_image_median"]:6.2f} CPU ms/img  '
            f'rounds {[round(x) for x in row["images_per_s_rounds"]]}')
  return rows


# --- Breakdown on one core -----------------------------------------------------


def breakdown_child(data_dir: str, passes: int) -> dict:
  """Microseconds per image of cumulative ImageNet preprocessing pipelines, run sequentially."""
  import tensorflow as tf
  import tensorflow_datasets as tfds
  from pfca_jax.data import classification as cls_data
  from pfca_jax.data import epochs
  from pfca_jax.data import preprocessing as pp
  config = _config('imagenet', data_dir)
  spec = cls_data.get_spec(config.dataset)
  # The records as the pipeline reads them: still-encoded images, TFDS's reader, the pipeline's options.
  records = tfds.builder('imagenet2012', data_dir=data_dir).as_dataset(
      split='train', decoders={'image': tfds.decode.SkipDecoding()},
      read_config=tfds.ReadConfig(try_autocache=False, options=epochs.read_options()))
  seed = tf.constant([7, 11], tf.int64)
  size = config.image_size

  def window(image, index):
    crop_seed = tf.unstack(tf.random.experimental.stateless_split(tf.random.experimental.stateless_fold_in(
        seed, index), num=2))[0]
    return pp.random_resized_crop_window(pp.image_height_width(image), crop_seed)

  def crop_decode(method):
    return lambda i, ex: tf.io.decode_and_crop_jpeg(ex['image'], window(ex['image'], i), channels=3,
                                                    dct_method=method)

  def train(i, ex):
    return pp.imagenet_train(ex['image'], tf.random.experimental.stateless_fold_in(seed, i), image_size=size)

  stages = {
      'read records': lambda i, ex: ex['image'],
      'decode full, INTEGER_ACCURATE': lambda i, ex: pp.decode_jpeg(ex['image']),
      'decode full, INTEGER_FAST': lambda i, ex: tf.io.decode_jpeg(ex['image'], channels=3,
                                                                   dct_method='INTEGER_FAST'),
      "decode full, default ('')": lambda i, ex: tf.io.decode_jpeg(ex['image'], channels=3),
      'crop window + decode_and_crop, INTEGER_ACCURATE': crop_decode('INTEGER_ACCURATE'),
      'crop window + decode_and_crop, INTEGER_FAST': crop_decode('INTEGER_FAST'),
      '+ resize to 224 (bilinear, antialias)': lambda i, ex: tf.image.resize(
          crop_decode('INTEGER_ACCURATE')(i, ex), [size, size], method='bilinear', antialias=True),
      '+ flip (= imagenet_train)': train,
      '+ normalize, before (mean, std broadcast from (3,))': lambda i, ex: normalize_before(
          train(i, ex), spec.mean, spec.std),
      '+ normalize (= the train map)': lambda i, ex: pp.normalize(train(i, ex), spec.mean, spec.std),
  }
  options = tf.data.Options()
  options.threading.private_threadpool_size = 1
  options.threading.max_intra_op_parallelism = 1
  options.autotune.enabled = False
  per_image = {}
  for name, fn in [*stages.items(), ('+ batch 64 (= the train map and batch, one thread)', None)]:
    ds = records.repeat(passes).enumerate()
    if fn is None:
      ds = ds.map(lambda i, ex: pp.normalize(train(i, ex), spec.mean, spec.std)).batch(64)
    else:
      ds = ds.map(fn)
    ds = ds.map(lambda *x: 1).with_options(options)  # reduce() runs the whole pipeline in C++.
    count = ds.reduce(0, lambda a, b: a + 1)  # Warm-up (files cached by the OS, kernels initialised).
    t0 = time.perf_counter()
    count = int(ds.reduce(0, lambda a, b: a + 1))
    images = count * (64 if fn is None else 1)
    per_image[name] = 1e6 * (time.perf_counter() - t0) / images
  return {'us_per_image': per_image, 'idct_pixels': idct_pixel_difference(records, train, size)}


def idct_pixel_difference(records, train, size: int, count: int = 256) -> dict:
  """Differences of the 224x224 [0, 255] float crops (before normalisation) between IDCT methods."""
  import tensorflow as tf
  from PIL import Image
  ref, fast, default, pil_diff = [], [], [], []
  original = tf.io.decode_and_crop_jpeg
  for index, example in enumerate(records.take(count)):
    index = tf.constant(index, tf.int64)
    crops = {}
    for method in ('INTEGER_ACCURATE', 'INTEGER_FAST', ''):
      tf.io.decode_and_crop_jpeg = lambda *a, **k: original(*a, **{**k, 'dct_method': method})
      crops[method] = train(index, example).numpy()
    tf.io.decode_and_crop_jpeg = original
    ref.append(crops['INTEGER_ACCURATE'])
    fast.append(crops['INTEGER_FAST'])
    default.append(crops[''])
    full = tf.io.decode_jpeg(example['image'], channels=3, dct_method='INTEGER_ACCURATE').numpy()
    pil = np.asarray(Image.open(io.BytesIO(example['image'].numpy())).convert('RGB'))
    pil_diff.append(int(np.abs(full.astype(int) - pil).max()))
  ref, fast, default = np.stack(ref), np.stack(fast), np.stack(default)
  return {
      'crops': count,
      'integer_fast_vs_accurate': {'max_abs': float(np.abs(fast - ref).max()),
                                   'mean_abs': float(np.abs(fast - ref).mean())},
      'default_vs_accurate': {'max_abs': float(np.abs(default - ref).max()),
                              'mean_abs': float(np.abs(default - ref).mean())},
      'accurate_full_decode_vs_pil_max_abs': max(pil_diff),
  }


# --- Main ---------------------------------------------------------------------


def main(argv=None) -> None:
  parser = runner.Parser(description=__doc__.split('\n')[0])
  parser.add_argument('--data_dir', default=os.path.join(tempfile.gettempdir(), 'pfca_input_pipeline'))
  parser.add_argument('--imagenet_images', type=int, default=704)
  parser.add_argument('--jpeg_kb', type=float, default=67.0)
  parser.add_argument('--div2k_images', type=int, default=16)
  parser.add_argument('--pipelines', default='imagenet,div2k,div2k_cached')
  parser.add_argument('--cores', default='0;0,1', help='core sets for taskset, separated by ";"')
  parser.add_argument('--variants', default='code',
                      help='comma-separated: code, before, integer_fast, intra_op_default')
  parser.add_argument('--rounds', type=int, default=2)
  parser.add_argument('--epochs_timed', type=int, default=2)
  parser.add_argument('--breakdown_passes', type=int, default=1, help='passes over the train split per stage')
  parser.add_argument('--skip_breakdown', action='store_true')
  parser.add_argument('--json', default='')
  parser.add_argument('--child', default='', help=argparse.SUPPRESS)
  parser.add_argument('--pipeline', default='imagenet', help=argparse.SUPPRESS)
  parser.add_argument('--variant', default='code', help=argparse.SUPPRESS)
  args = parser.parse_args(argv)

  if args.child == 'throughput':
    print('RESULT ' + json.dumps(measure_child(args.pipeline, args.data_dir, args.variant, args.epochs_timed)))
    return
  if args.child == 'breakdown':
    print('RESULT ' + json.dumps(breakdown_child(args.data_dir, args.breakdown_passes)))
    return

  log = lambda message: print(message, flush=True)
  os.makedirs(args.data_dir, exist_ok=True)
  data = {'imagenet2012': prepare_imagenet(args.data_dir, args.imagenet_images, args.jpeg_kb, log),
          'div2k': prepare_div2k(args.data_dir, args.div2k_images, log)}
  rows = throughput(args.data_dir, args.pipelines.split(','), args.cores.split(';'), args.variants.split(','),
                    args.rounds, args.epochs_timed, log)
  breakdown = None
  if not args.skip_breakdown:
    breakdown = run_pinned('0', ['--child=breakdown', f'--data_dir={args.data_dir}',
                                 f'--breakdown_passes={args.breakdown_passes}'])
    log('\nImageNet preprocessing on one core, sequential, microseconds per image (cumulative stages):')
    for name, us in breakdown['us_per_image'].items():
      log(f'  {name:<52} {us:8.0f}')
    log(f'IDCT pixel differences on the 224x224 crops: {json.dumps(breakdown["idct_pixels"])}')
  if args.json:
    result = {'command': 'python ' + ' '.join(sys.argv), 'date': time.strftime('%Y-%m-%d'), 'machine': _machine(),
              'data': data,
              'throughput': rows, 'breakdown_one_core': breakdown}
    with open(args.json, 'w') as f:
      json.dump(result, f, indent=2)
      f.write('\n')


def _machine() -> str:
  model = next((line.split(':', 1)[1].strip() for line in subprocess.run(
      ['lscpu'], capture_output=True, text=True).stdout.splitlines() if line.startswith('Model name')), '?')
  import tensorflow as tf
  return f'{model}, {os.cpu_count()} cores; tensorflow {tf.__version__}'


if __name__ == '__main__':
  sys.exit(runner.run(main))
