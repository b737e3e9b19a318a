"""Super-resolution end to end on a fake prepared DIV2K x2 made of real photo crops, on 8 simulated
devices: trains, evaluates on DIV2K validation and a folder of real images, writes samples; refuses tiles
the upscaler cannot use. Resuming bit for bit is tested in test_ema.py (the average included), a missing
evaluation folder in test_bad_inputs.py's table."""

import json
import os

import numpy as np
import pytest
import skimage.data
from PIL import Image

from pfca_jax import train
from pfca_jax.train import config_defaults
from pfca_jax.data import fake_data
from pfca_jax.imresize import imresize
from pfca_jax.train.validation import UserError


def crops(n, seed, size):
  rng = np.random.default_rng(seed)
  photos = [skimage.data.astronaut(), skimage.data.coffee(), skimage.data.chelsea()]
  out = []
  for i in range(n):
    p = photos[i % 3]
    h, w = size(rng)
    y, x = rng.integers(0, p.shape[0] - h), rng.integers(0, p.shape[1] - w)
    out.append(np.ascontiguousarray(p[y:y + h, x:x + w]))
  return out


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
  path = str(tmp_path_factory.mktemp('tfds'))
  pair = lambda hr: (imresize(hr, 0.5), hr)
  fake_data.write_fake_div2k(path, 2, {
      'train': [pair(hr) for hr in crops(8, 0, lambda rng: (40, 48))],
      'validation': [pair(hr) for hr in crops(3, 1, lambda rng: (36, 44))]})
  return path


@pytest.fixture(scope='module')
def folder(tmp_path_factory):
  path = tmp_path_factory.mktemp('Set3', numbered=False) / 'HR'
  path.mkdir()
  for i, hr in enumerate(crops(3, 2, lambda rng: (30, 34))):
    Image.fromarray(hr).save(path / f'img_{i}.png')
  return str(path)


def sr_config(data_dir, folder='', **overrides):
  config = config_defaults.super_resolution(scale=2)
  config.update(dict(data_dir=data_dir, batch_size=8, hr_patch_size=16, patches_per_image=2, num_train_steps=4,
                     log_every_steps=2, eval_every_steps=4, checkpoint_every_steps=2, eval_folders=folder,
                     shuffle_buffer_size=16, eval_tile=12, eval_tile_overlap=2, eval_num_samples=1))
  config.model.update(num_feat=8, num_block=2, attention='pfca')
  config.update(overrides)
  config.lock()
  return config


def test_div2k_end_to_end_with_folder_eval_and_samples(tmp_path, data_dir, folder):
  workdir = str(tmp_path / 'run')
  final = train.train_and_evaluate(sr_config(data_dir, folder), workdir)
  assert final['eval/div2k/images'] == 3 and final['eval/Set3/images'] == 3
  for name in ('div2k', 'Set3'):
    assert 5 < final[f'eval/{name}/psnr_y'] < 60 and 0 < final[f'eval/{name}/ssim_y'] <= 1
    assert f'eval/{name}/psnr_rgb' in final
  results = json.load(open(os.path.join(workdir, 'results.json')))
  assert results['steps'] == 4 and results['params'] > 0
  samples = os.listdir(os.path.join(workdir, 'samples', 'Set3'))
  assert samples == ['img_0_step4.png']
  panel = np.asarray(Image.open(os.path.join(workdir, 'samples', 'Set3', samples[0])))
  assert panel.shape == (30, 4 * 34, 3)  # LR (nearest) | bicubic | SR | HR.
  assert sorted(os.listdir(os.path.join(workdir, 'checkpoints'))) == ['2', '4']


@pytest.mark.parametrize('tile, overlap', [(4, 1), (12, 6)])
def test_tiles_the_upscaler_cannot_use_fail_at_start(tmp_path, data_dir, tile, overlap):
  with pytest.raises(UserError, match=f'eval_tile={tile}, eval_tile_overlap={overlap}: overlap=') as err:
    train.train_and_evaluate(sr_config(data_dir, eval_tile=tile, eval_tile_overlap=overlap), str(tmp_path / 'run'))
  assert '\n' not in str(err.value) and not os.path.exists(tmp_path / 'run' / 'checkpoints')
