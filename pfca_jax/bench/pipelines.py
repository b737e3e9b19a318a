"""Input-pipeline throughput for pfca_jax.bench: examples/s of each dataset's training iterator alone.

Compared with a model's step rate it says whether training waits on data. Datasets that ship with
installed packages (sklearn_digits, skimage_photos) are always measured; CIFAR-100, ImageNet and
DIV2K only where they are prepared in the TFDS data_dir (else reported as skipped).
"""

import time

from pfca_jax.train import config_defaults
from pfca_jax.data import classification as cls_data
from pfca_jax.data import super_resolution as sr_data
from pfca_jax.data.tfds_source import DatasetNotFoundError


def _classification(dataset: str, image_size: int):
  config = config_defaults.imagenet() if dataset == 'imagenet2012' else config_defaults.classification()
  config.dataset, config.image_size = dataset, image_size
  if dataset == 'sklearn_digits':
    config.crop_padding = 2
  return config


def _super_resolution(dataset: str):
  config = config_defaults.super_resolution(4)
  config.dataset = dataset
  return config


PIPELINES = {
    'sklearn_digits (16x16)': lambda: _classification('sklearn_digits', 16),
    'cifar100 (32x32)': lambda: _classification('cifar100', 32),
    'imagenet2012 (224x224)': lambda: _classification('imagenet2012', 224),
    'skimage_photos x4 (128 HR patches)': lambda: _super_resolution('skimage_photos'),
    'div2k x4 (128 HR patches)': lambda: _super_resolution('div2k'),
}


def measure(batch_size: int, log, batches: int = 20) -> list[dict]:
  """examples/s over `batches` batches after one warm-up batch, per pipeline that can be opened."""
  rows = []
  for name, make_config in PIPELINES.items():
    config = make_config()
    config.batch_size = batch_size
    module = sr_data if config.task == 'super_resolution' else cls_data
    try:
      info = module.dataset_info(config)
    except DatasetNotFoundError:
      rows.append({'pipeline': name, 'examples_per_s': None, 'note': 'not prepared here: skipped'})
      continue
    iterator = module.train_iterator(config, info)
    next(iterator)
    t0 = time.perf_counter()
    for _ in range(batches):
      next(iterator)
    rate = batches * batch_size / (time.perf_counter() - t0)
    rows.append({'pipeline': name, 'examples_per_s': rate, 'note': ''})
    log(f'pipeline {name}: {rate:,.0f} examples/s')
  return rows


def format_table(rows: list[dict]) -> str:
  lines = [f'{"input pipeline (train)":<36} {"examples/s":>11}', '-' * 48]
  for r in rows:
    rate = r['note'] if r['examples_per_s'] is None else f'{r["examples_per_s"]:>11,.0f}'
    lines.append(f'{r["pipeline"]:<36} {rate:>11}')
  return '\n'.join(lines)
