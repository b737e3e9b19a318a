"""A tiny super-resolution run for the tests of the moving average, init_from and the convert command.

MSRResNet x2 (8 features, 1 block) on a fake DIV2K of three real photo crops, Adam at 1e-2 (not 2e-4,
so that two steps move the weights far enough for the average, decay 0.5, to score differently).
"""

import numpy as np
import skimage.data

from pfca_jax.data import fake_data
from pfca_jax.imresize import imresize
from pfca_jax.train import config_defaults


def write_data(path: str) -> str:
  """Nine training pairs (three crops of skimage's coffee, three times) and one validation pair, at x2."""
  photo = skimage.data.coffee()
  crops = [np.ascontiguousarray(photo[y:y + 32, x:x + 40]) for y, x in ((100, 200), (150, 60), (220, 300))]
  fake_data.write_fake_div2k(path, 2, {'train': [(imresize(hr, 0.5), hr) for hr in crops] * 3,
                                       'validation': [(imresize(crops[0], 0.5), crops[0])]}, num_shards=1)
  return path


def config(data_dir: str, attention: str = 'none', **overrides):
  """Two steps, checkpointed and evaluated at step 2, ema_decay 0.5; `overrides` replace any field."""
  c = config_defaults.super_resolution(scale=2)
  c.update(dict(data_dir=data_dir, batch_size=8, hr_patch_size=16, patches_per_image=1, num_train_steps=2,
                base_learning_rate=1e-2, log_every_steps=1, eval_every_steps=2, checkpoint_every_steps=2,
                shuffle_buffer_size=8, eval_tile=12, eval_tile_overlap=2, eval_num_samples=0, ema_decay=0.5))
  c.model.update(num_feat=8, num_block=1, attention=attention)
  c.update(overrides)
  return c
