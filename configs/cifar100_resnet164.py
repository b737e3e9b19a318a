"""CIFAR-100, CIFAR ResNet-164 (bottleneck blocks [18, 18, 18], outputs 64/128/256 channels,
1,727,284 parameters with none/pfca/simam).

Command (attention after the colon, or --config.model.attention=...):

    python -m pfca_jax.main --config=configs/cifar100_resnet164.py:pfca --workdir=/tmp/cifar100_r164_pfca

Recipe (docs/training.md, "Recipes"): SGD momentum 0.9, lr 0.1 at batch 128, weight decay 5e-4 on every
parameter, 164 epochs, lr x0.1 after epochs 81 and 122; pad-4 random crop + flip, per-channel
normalisation; evaluation on all 10,000 test images after every epoch.

Expected runtime: measured on this project's CPU (2-core AMD EPYC, no GPU) with PFCA at batch 128
(experiments/results/recipe_runtimes.md): 3.3 images/s (39 s a step), so the 164-epoch recipe takes
about 29 days there: a GPU job. Not timed on a GPU.

Reference figure (not ours): ResNet-164 (original, post-activation) reaches 74.84% top-1 on CIFAR-100
(25.16% error) in He et al., "Identity Mappings in Deep Residual Networks" (ECCV 2016), Table 2.
"""

from pfca_jax.train import config_defaults


def get_config(arg=None):
  config = config_defaults.classification()
  config.model.name = 'cifar_resnet164'
  config_defaults.apply_attention_arg(config, arg)
  return config
