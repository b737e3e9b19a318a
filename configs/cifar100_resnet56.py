"""CIFAR-100, CIFAR ResNet-56 (basic blocks, widths 16/32/64, 861,620 parameters with none/pfca/simam).

Command (attention after the colon, or --config.model.attention=...):

    python -m pfca_jax.main --config=configs/cifar100_resnet56.py:pfca --workdir=/tmp/cifar100_r56_pfca

Recipe (docs/training.md, "Recipes"): SGD momentum 0.9, lr 0.1 at batch 128, weight decay 5e-4 on every
parameter, 164 epochs, lr x0.1 after epochs 81 and 122; pad-4 random crop + flip, per-channel
normalisation; evaluation on all 10,000 test images after every epoch.

Expected runtime: measured on this project's CPU (2-core AMD EPYC, no GPU) with PFCA at batch 128
(experiments/results/recipe_runtimes.md):
42 images/s, so the 164-epoch recipe (8.2M images) takes about 2.3 days there. Not timed on a GPU.

Reference figure (not ours): ResNet-56 reaches 72.34% top-1 on CIFAR-100 in Tian et al., "Contrastive
Representation Distillation" (ICLR 2020), Table 1, with a 240-epoch recipe.
"""

from pfca_jax.train import config_defaults


def get_config(arg=None):
  config = config_defaults.classification()
  config.model.name = 'cifar_resnet56'
  config_defaults.apply_attention_arg(config, arg)
  return config
