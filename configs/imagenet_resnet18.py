"""ImageNet (ILSVRC-2012), ResNet-18 (torchvision layout, basic blocks, 11,689,512 parameters with none/pfca/simam).

Command (attention after the colon, or --config.model.attention=...; ImageNet must be prepared with
TFDS first, see the README):

    python -m pfca_jax.main --config=configs/imagenet_resnet18.py:pfca --workdir=/tmp/imagenet_r18_pfca \
        --config.data_dir=/path/to/tensorflow_datasets

Recipe (docs/training.md, "Recipes"): SGD momentum 0.9, lr 0.1 x batch/256 (computed, so a batch override
rescales it), weight decay 1e-4 on every parameter, 100 epochs, lr x0.1 every 30 epochs
(--config.schedule=cosine --config.warmup_epochs=5 for cosine with warm-up); random-resized crop to 224
+ flip; evaluation on all 50,000 validation images (resize 256, centre crop 224), top-1 and top-5.

Expected runtime: measured on this project's CPU (2-core AMD EPYC, no GPU) at batch 16
(experiments/results/cost.md): 13.8 images/s (1.16 s a train step), i.e. about 107 days for the
100-epoch recipe: a GPU/TPU job. Not timed on a GPU.

Reference figure (not ours): torchvision's ResNet-18 v1 weights reach 69.76% top-1 (89.08% top-5).
"""

from pfca_jax.train import config_defaults


def get_config(arg=None):
  config = config_defaults.imagenet()
  config.model.name = 'resnet18'
  config_defaults.apply_attention_arg(config, arg)
  return config
