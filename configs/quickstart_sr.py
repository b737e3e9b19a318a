"""Super-resolution quick start: a small MSRResNet x2 on real skimage.data photos, without and with PFCA, offline.

Command (no dataset to download; a few minutes on a 2-core CPU):

    python -m pfca_jax.main --config=configs/quickstart_sr.py --workdir=/tmp/quickstart_sr

Trains on 64x64 HR patches of six photos shipped with scikit-image (astronaut, coffee, chelsea,
hubble_deep_field, immunohistochemistry, retina) and evaluates whole, held-out photos (rocket,
stereo_motorcycle, camera) at x2: Y-PSNR / Y-SSIM after cropping 2 border pixels, next to bicubic
upscaling of the same LR image (MATLAB imresize, which also made the LR images). Runs once per entry
of `compare_attentions` (default 'none,pfca'; `configs/quickstart_sr.py:se` for none vs SE), each in
WORKDIR/<attention>/, then prints the side-by-side table and one row per held-out photo.

Model: MSRResNet x2 with 32 features and 4 residual blocks (BasicSR's is 64 x 16). Recipe: BasicSR's
(L1, Adam 2e-4 with betas 0.9/0.99, batch 16) shortened to 800 iterations with one cosine cycle, without
its moving average of the weights.
"""

from pfca_jax.train import config_defaults


def get_config(arg=None):
  config = config_defaults.super_resolution(scale=2)
  config.dataset = 'skimage_photos'
  config.model.num_feat = 32
  config.model.num_block = 4
  config.cache_train = True           # Nine photos: decode once.
  config.patches_per_image = 32
  config.shuffle_buffer_size = 200
  config.num_train_steps = 800
  config.lr_restart_periods = (800,)
  # No weight average: over 800 iterations, BasicSR's 0.999 would still hold 45% of the initial weights.
  config.ema_decay = 0.0
  config.log_every_steps = 100
  config.eval_every_steps = 800
  config.checkpoint_every_steps = 400
  config.eval_num_samples = 3
  config_defaults.compare_with_none(config, arg)
  return config
