"""ImageNet (ILSVRC-2012), ResNet-50 v1.5 (torchvision layout, 25,557,032 parameters with none/pfca/simam).

Command (attention after the colon, or --config.model.attention=...; ImageNet must be prepared with
TFDS first, see the README):

    python -m pfca_jax.main --config=configs/imagenet_resnet50.py:pfca --workdir=/tmp/imagenet_r50_pfca \
        --config.data_dir=/path/to/tensorflow_datasets

Recipe (docs/training.md, "Recipes"): SGD momentum 0.9, lr 0.1 x batch/256 (computed, so a batch override
rescales it), weight decay 1e-4 on every parameter, 100 epochs, lr x0.1 every 30 epochs
(--config.schedule=cosine --config.warmup_epochs=5 for cosine with warm-up); random-resized crop to 224
+ flip; evaluation on all 50,000 validation images (resize 256, centre crop 224), top-1 and top-5.

Expected runtime: measured on this project's CPU (2-core AMD EPYC, no GPU) at batch 16
(experiments/results/cost.md): 5.4 images/s (2.96 s a train step) plain, 5.1 with PFCA (3.17 s),
i.e. about 9 months for the 100-epoch recipe: a GPU/TPU job. The benchmark's step on one H100
(bfloat16, batch 256; not this trainer end to end): experiments/results/speed.md, "GPU (bfloat16)".

Reference figure (not ours): torchvision's ResNet-50 v1 weights reach 76.13% top-1 (92.86% top-5);
the SimAM paper reports SimAM-R50 77.45%, SE-R50 77.63%, ECA-R50 77.48% top-1.
"""

from pfca_jax.train import config_defaults


def get_config(arg=None):
  config = config_defaults.imagenet()
  config.model.name = 'resnet50'
  config_defaults.apply_attention_arg(config, arg)
  return config
