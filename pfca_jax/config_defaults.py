"""The fields every classification config has, each with its meaning and its default.

Config files in `configs/` start from `classification()`, set the recipe of their task and lock the
result, so that a misspelt `--config.FIELD=VALUE` override is an error instead of being ignored.
"""

import ml_collections

from pfca_jax.models.attention import ATTENTIONS


def classification() -> ml_collections.ConfigDict:
  """Defaults shared by the CIFAR-100 and ImageNet configs (CONVENTIONS.md section 3 and 7)."""
  c = ml_collections.ConfigDict()
  c.task = 'classification'           # Which loss, metrics and input pipeline the trainer uses.

  c.model = ml_collections.ConfigDict()
  c.model.name = 'cifar_resnet20'     # A name of pfca_jax.models.MODELS.
  c.model.attention = 'none'          # none | pfca | se | eca | simam.
  # Keyword options of the attention as 'key=value,...', e.g. 'lam=1e-3,variance=biased' for PFCA or
  # 'reduction=8' for SE; empty for each module's defaults.
  c.model.attention_options = ''
  c.model.attention_position = 'auto'  # auto (SimAM post_conv, others post_bn) | post_bn | post_conv.
  c.model.zero_init_last_bn = False   # Start each residual branch's last BN scale at zero.
  c.model.dtype = 'float32'           # Compute dtype (float32 | bfloat16); parameters stay float32.

  c.dataset = 'cifar100'              # TFDS name: cifar100 | imagenet2012.
  c.data_dir = ml_collections.config_dict.placeholder(str)  # TFDS data_dir; None: TFDS's default.
  c.train_split = 'train'             # TFDS split trained on.
  c.eval_split = 'test'               # TFDS split evaluated on, every example counted.
  c.image_size = 32                   # Side of the square crops the network sees.
  c.crop_padding = 4                  # CIFAR: zero padding before the random crop.
  c.eval_resize_size = 256            # ImageNet: shorter side resized to this before the centre crop.
  c.shuffle_buffer_size = 10_000      # Examples in tf.data's shuffle buffer (per process).
  c.cache_train = True                # Keep the decoded train split in memory (small datasets only).

  c.batch_size = 128                  # Global batch over all devices and processes.
  c.eval_batch_size = 1000            # Global eval batch; rounded up to a multiple of the device count.
  # Training length: num_train_steps when > 0, else num_epochs (epochs of the train split).
  c.num_epochs = 164.0
  c.num_train_steps = -1

  c.optimizer = 'sgd'                 # sgd (momentum, as the PyTorch references) | adam.
  c.momentum = 0.9                    # SGD momentum (PyTorch semantics, no dampening).
  c.nesterov = False                  # Nesterov momentum.
  # Peak learning rate = base_learning_rate * batch_size / lr_reference_batch_size, so that a batch
  # override rescales it linearly (Goyal et al.); at the recipe's batch it is base_learning_rate.
  c.base_learning_rate = 0.1
  c.lr_reference_batch_size = 128
  c.schedule = 'step'                 # step | cosine | constant.
  c.lr_boundaries_epochs = (81, 122)  # step: epochs after which the rate is multiplied by lr_decay_factor.
  c.lr_decay_factor = 0.1             # step: the multiplier at each boundary.
  c.warmup_epochs = 0.0               # Linear warm-up from 0 to the peak rate (any schedule).
  c.weight_decay = 5e-4               # L2 added to the gradient before momentum (PyTorch SGD's coupling).
  # Which parameters are decayed: 'all' (the PyTorch reference recipes: kernels, biases and BN
  # scales/offsets) or 'kernels' (conv and dense kernels only).
  c.weight_decay_on = 'all'
  c.label_smoothing = 0.0             # Label smoothing of the cross-entropy targets.

  c.log_every_steps = 100             # Console line and train/* TensorBoard scalars.
  # Evaluation and checkpoint intervals: the *_steps field when > 0, else the *_epochs field.
  c.eval_every_steps = -1
  c.eval_every_epochs = 1.0
  c.checkpoint_every_steps = -1
  c.checkpoint_every_epochs = 1.0
  c.keep_checkpoints = 3              # How many recent checkpoints stay on disk.
  c.seed = 0                          # Initialisation, shuffling and augmentation.
  return c


def imagenet() -> ml_collections.ConfigDict:
  """The ImageNet recipe of CONVENTIONS.md section 3 on top of `classification()`; the model is set by each config."""
  c = classification()
  c.model.name = 'resnet50'
  c.dataset = 'imagenet2012'
  c.eval_split = 'validation'
  c.image_size = 224
  c.cache_train = False               # 1.28M JPEGs do not fit in memory.
  c.batch_size = 256
  c.eval_batch_size = 500
  c.num_epochs = 100.0
  c.base_learning_rate = 0.1          # At lr_reference_batch_size = 256: lr = 0.1 x batch / 256.
  c.lr_reference_batch_size = 256
  c.lr_boundaries_epochs = (30, 60, 90)
  c.weight_decay = 1e-4
  return c


def apply_attention_arg(config: ml_collections.ConfigDict, arg: str | None) -> None:
  """`--config=FILE.py:ATTENTION` selects the attention; an unknown name fails while parsing flags."""
  if arg:
    if arg not in ATTENTIONS:
      raise ValueError(f'unknown attention {arg!r} in the config argument; valid: {", ".join(ATTENTIONS)}')
    config.model.attention = arg
