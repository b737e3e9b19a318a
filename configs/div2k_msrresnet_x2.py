"""DIV2K, MSRResNet x2 (64 features, 16 blocks; BasicSR's definition), L1 loss, Adam.

Command (attention after the colon, or --config.model.attention=...; DIV2K must be prepared with
`tfds build div2k/bicubic_x2 --data_dir=DIR` first):

    python -m pfca_jax.main --config=configs/div2k_msrresnet_x2.py:pfca --workdir=/tmp/div2k_x2_pfca \
        --config.data_dir=DIR --config.eval_folders=/data/Set5/HR,/data/Set14/HR

Recipe (docs/training.md, "Recipes", BasicSR's): HR patches of 64 px with identical random flips and
90-degree rotations on LR and HR, batch 16, Adam lr 2e-4 betas (0.9, 0.99), cosine annealing with restarts
every 250k iterations down to 1e-7, 1M iterations, and a moving average of the weights (decay 0.999),
which is what evaluation scores (ema_decay). Evaluation on the 100 DIV2K validation images and any
benchmark folders: whole images in tiles, Y-PSNR / Y-SSIM after cropping 2 border pixels, RGB PSNR too.

Speed measured on a 2-core Intel Xeon instance of this project's CPU (no GPU), x4 at batch 16 (the
2026-11-26 32-round run in experiments/results/speed.md, "CPU step times"): 10.2 patches/s with none,
9.4 with pfca: the 1M-iteration recipe would take 18-20 days there, so it is a GPU job. The
benchmark's x4 step on one H100 (bfloat16, batch 128; not this trainer end to end):
experiments/results/speed.md, "GPU (bfloat16)".

Reference figure (not ours): BasicSR's MSRResNet x4 scores 30.2468 dB / 0.8651 on Set5 (RGB, its model zoo).
"""

from pfca_jax.train import config_defaults


def get_config(arg=None):
  config = config_defaults.super_resolution(scale=2)
  config_defaults.apply_attention_arg(config, arg)
  return config
