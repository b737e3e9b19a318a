"""Quick start: CIFAR ResNet-20 on scikit-learn's real handwritten digits, without and with PFCA, offline.

Command (the README's first; no dataset to download, a few minutes on a 2-core CPU):

    python -m pfca_jax.main --config=configs/quickstart.py --workdir=/tmp/quickstart

It trains the same network twice through the ordinary trainer, once per entry of
`compare_attentions` (default 'none,pfca'; `configs/quickstart.py:se` compares none with SE), each
run in WORKDIR/<attention>/ with its checkpoints, TensorBoard logs and results.json, then prints a
side-by-side table (test accuracy, parameters, GFLOPs, training images/s) and writes it to
WORKDIR/comparison.md. A single run: --config.compare_attentions=pfca.

Data: the 1,797 8x8 digits of sklearn.datasets.load_digits(), stratified 80/20 split with seed 0
(1,437 train, 360 test), resized to 16x16 (bilinear), random shifts of up to 2 pixels.
Recipe: SGD momentum 0.9, lr 0.05 at batch 64 (0.1 x 64 / 128), cosine decay with one warm-up
epoch, weight decay 5e-4, 30 epochs (660 steps); evaluation on the 360 test digits every 5 epochs.
"""

from pfca_jax.train import config_defaults


def get_config(arg=None):
  config = config_defaults.classification()
  config.model.name = 'cifar_resnet20'
  config.dataset = 'sklearn_digits'
  config.image_size = 16
  config.crop_padding = 2
  config.shuffle_buffer_size = 2_000
  config.batch_size = 64
  config.eval_batch_size = 360
  config.num_epochs = 30.0
  config.schedule = 'cosine'
  config.warmup_epochs = 1.0
  config.log_every_steps = 50
  config.eval_every_epochs = 5.0
  config.checkpoint_every_epochs = 10.0
  config_defaults.compare_with_none(config, arg)
  return config
