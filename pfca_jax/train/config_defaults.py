"""Every config field, with its meaning and its default: those both tasks share once, then each task's own.

Config files in `configs/` start from `classification()`, `imagenet()` or `super_resolution(scale)`, set
the recipe of their task and lock the result, so that a misspelt `--config.FIELD=VALUE` override is an
error instead of being ignored. A config carries the fields of its own optimiser and schedule only
(`OPTIMIZER_FIELDS`, `SCHEDULE_FIELDS`).
"""

import ml_collections

from pfca_jax.models.attention import ATTENTIONS

# The fields an optimiser or schedule reads that the trainer has no default for. A config carries those of
# its own optimiser and schedule only (a locked config takes no new field from the command line, so a config
# file that switches to another optimiser or schedule sets its fields).
OPTIMIZER_FIELDS = {'sgd': ('momentum', 'nesterov'), 'adam': ()}  # Adam's betas default to 0.9, 0.999.
SCHEDULE_FIELDS = {'step': ('lr_boundaries_epochs', 'lr_decay_factor'), 'cosine': (), 'constant': (),
                   'cosine_restarts': ('lr_restart_periods', 'lr_min')}


def _shared(task: str) -> ml_collections.ConfigDict:
  """The fields every task has, each commented once; the tasks below set their own values and add the rest."""
  c = ml_collections.ConfigDict()
  c.task = task                       # classification | super_resolution: the loss, metrics and input pipeline.
  c.model = _shared_model()

  c.dataset = ''                      # Each task's list below; 'synthetic' for generated data (docs/synthetic.md).
  c.data_dir = ml_collections.config_dict.placeholder(str)  # TFDS data_dir; None: TFDS's default.
  c.train_split = 'train'             # TFDS split trained on.
  c.eval_split = 'test'               # TFDS split evaluated on, every example counted.
  c.shuffle_buffer_size = 10_000      # Examples per shuffled window, per process (each task says what it holds).
  c.cache_train = True                # Keep the decoded train split in memory (small datasets only).

  c.batch_size = 128                  # Global batch over all devices and processes.
  # Training length: num_train_steps when > 0; with -1, num_epochs (epochs of the train split).
  c.num_epochs = 0.0
  c.num_train_steps = -1

  c.optimizer = 'sgd'                 # sgd (momentum, as the PyTorch references) | adam.
  # Peak learning rate = base_learning_rate * batch_size / lr_reference_batch_size, so that a batch
  # override rescales it linearly (Goyal et al.); at the recipe's batch it is base_learning_rate.
  c.base_learning_rate = 0.1
  c.lr_reference_batch_size = 128
  c.schedule = 'step'                 # step | cosine | constant | cosine_restarts (each with its own fields).
  c.warmup_epochs = 0.0               # Linear warm-up from 0 to the peak rate (any schedule).
  c.weight_decay = 0.0                # L2 added to the gradient before the optimiser (PyTorch SGD's coupling).
  # Which parameters are decayed: 'all' (the PyTorch reference recipes: kernels, biases and BN
  # scales/offsets) or 'kernels' (conv and dense kernels only).
  c.weight_decay_on = 'all'
  # Exponential moving average of the weights (parameters and BatchNorm statistics), updated after every
  # step: ema = ema_decay * ema + (1 - ema_decay) * weights. Evaluation, predict and `convert to_torch`
  # then use it. 0: no average.
  c.ema_decay = 0.0
  # Start from these weights instead of a random initialisation: a run folder, a folder written by
  # `python -m pfca_jax.convert from_torch`, or a PyTorch .pth file (needs PyTorch). Any attention may be
  # inserted; the optimiser starts fresh. Read only at step 0: a resumed run continues from its own checkpoint.
  c.init_from = ''

  c.log_every_steps = 100             # Console line and train/* TensorBoard scalars.
  # Evaluation and checkpoint intervals: the *_steps field when > 0, else the *_epochs field.
  c.eval_every_steps = -1
  c.eval_every_epochs = 1.0
  c.checkpoint_every_steps = -1
  c.checkpoint_every_epochs = 1.0
  c.keep_checkpoints = 3              # How many recent checkpoints stay on disk.
  # Several processes (docs/clusters.md). A process whose heartbeat stops for peer_timeout_s is lost, and
  # every other one ends the job (status 5). A process that completes no training step for step_timeout_s
  # (the clock stops for its first compilation, evaluations and checkpoint saves) ends the job (status 6);
  # PyTorch's NCCL watchdog waits 10 minutes too. join_timeout_s: how long processes wait for the others to
  # start (JAX's default).
  c.peer_timeout_s = 30.0
  c.step_timeout_s = 600.0
  c.join_timeout_s = 300
  # 'START:END': a jax.profiler trace of the training steps after START up to END, written by process 0
  # under WORKDIR/plugins/profile/ (docs/training.md, "Where the time goes"); empty: none.
  c.profile_steps = ''
  c.seed = 0                          # Initialisation, shuffling and augmentation.
  # Comma-separated attentions to train one after another with this config, each in WORKDIR/<attention>,
  # followed by a side-by-side table (WORKDIR/comparison.md); empty: one run of model.attention in WORKDIR.
  # An explicit --config.model.attention=A replaces the entries after the first (docs/runs.md).
  c.compare_attentions = ''
  return c


def _shared_model() -> ml_collections.ConfigDict:
  """config.model's fields every network has."""
  m = ml_collections.ConfigDict()
  m.name = ''                         # A name of pfca_jax.models.MODELS.
  m.attention = 'none'                # none | pfca | se | eca | simam.
  # Keyword options of the attention as 'key=value,...', e.g. 'lam=1e-3,variance=biased' for PFCA or
  # 'reduction=8' for SE; empty for each module's defaults.
  m.attention_options = ''
  m.dtype = 'float32'                 # Compute dtype (float32 | bfloat16); parameters stay float32.
  # The layers the network is built from: fast (the speed layer, pfca_jax/models/fast/) | reference
  # (flax's layers and the attention definitions as written, pfca_jax/models/attention.py). Same
  # parameters and function (tested); use reference to train an edited attention as you wrote it.
  m.attention_impl = 'fast'
  # With fast, the convolution lowering: auto (matmul in programs compiled for the CPU, xla elsewhere)
  # | xla | matmul; same parameters and outputs either way (pfca_jax/models/fast/conv.py).
  m.conv_impl = 'auto'
  return m


def classification() -> ml_collections.ConfigDict:
  """Defaults shared by the CIFAR-100 and ImageNet configs (docs/training.md, "Recipes")."""
  c = _shared('classification')
  c.model.name = 'cifar_resnet20'
  c.model.attention_position = 'auto'  # auto (SimAM post_conv, others post_bn) | post_bn | post_conv.
  c.model.zero_init_last_bn = False   # Start each residual branch's last BN scale at zero.

  # cifar100 | imagenet2012 (prepared TFDS data) | sklearn_digits (offline) | synthetic (generated, below).
  c.dataset = 'cifar100'
  c.image_size = 32                   # Side of the square crops the network sees.
  c.crop_padding = 4                  # CIFAR: zero padding before the random crop.
  c.eval_resize_size = 256            # ImageNet: shorter side resized to this before the centre crop.
  # Each epoch reads its files in a seeded order and shuffles windows of this many consecutive examples
  # (up to two windows of encoded records in memory).
  c.shuffle_buffer_size = 10_000
  # dataset='synthetic': generated images of image_size, without files or TensorFlow, for measuring the
  # trainer and checking a machine (docs/synthetic.md). Its classes and split sizes (CIFAR-100's here):
  c.synthetic = ml_collections.ConfigDict({'num_classes': 100, 'train_examples': 50_000, 'eval_examples': 10_000})

  c.eval_batch_size = 1000            # Global eval batch; rounded up to a multiple of the device count.
  c.num_epochs = 164.0

  c.momentum = 0.9                    # SGD momentum (PyTorch semantics, no dampening).
  c.nesterov = False                  # Nesterov momentum.
  c.lr_boundaries_epochs = (81, 122)  # step: epochs after which the rate is multiplied by lr_decay_factor.
  c.lr_decay_factor = 0.1             # step: the multiplier at each boundary.
  c.weight_decay = 5e-4
  c.label_smoothing = 0.0             # Label smoothing of the cross-entropy targets.
  return c


def imagenet() -> ml_collections.ConfigDict:
  """The ImageNet recipe of docs/training.md, "Recipes" on top of `classification()`; the model is set by each config."""
  c = classification()
  c.model.name = 'resnet50'
  c.dataset = 'imagenet2012'
  c.eval_split = 'validation'
  c.image_size = 224
  c.cache_train = False               # 1.28M JPEGs do not fit in memory.
  c.synthetic.update({'num_classes': 1000, 'train_examples': 1_281_167, 'eval_examples': 50_000})  # ImageNet's.
  c.batch_size = 256
  c.eval_batch_size = 500
  c.num_epochs = 100.0
  c.base_learning_rate = 0.1          # At lr_reference_batch_size = 256: lr = 0.1 x batch / 256.
  c.lr_reference_batch_size = 256
  c.lr_boundaries_epochs = (30, 60, 90)
  c.weight_decay = 1e-4
  return c


def super_resolution(scale: int) -> ml_collections.ConfigDict:
  """The DIV2K MSRResNet recipe of docs/training.md, "Recipes" (BasicSR's)."""
  c = _shared('super_resolution')     # L1 loss on aligned LR/HR patches; PSNR/SSIM evaluation on full images.
  c.model.name = 'msrresnet'          # The only super-resolution model; its attention follows conv2 of each block.
  c.model.num_feat = 64               # Feature channels (BasicSR: 64).
  c.model.num_block = 16              # Residual blocks (BasicSR: 16).

  # div2k: TFDS div2k/bicubic_x{scale}, 800 train and 100 validation pairs | skimage_photos (offline) |
  # synthetic: generated pairs, without files or TensorFlow, for measuring the trainer (docs/synthetic.md).
  c.dataset = 'div2k'
  c.scale = scale                     # Upscaling factor: 2, 3 or 4.
  c.eval_split = 'validation'         # DIV2K images 801-900, evaluated whole.
  c.hr_patch_size = {2: 64, 3: 96, 4: 128}[scale]  # HR side of the training patches (LR: / scale).
  c.patches_per_image = 100           # Patches drawn from each image per epoch (BasicSR's enlarge ratio).
  c.shuffle_buffer_size = 2_000       # Patch pairs per shuffled window (one window in memory).
  # Keep the decoded DIV2K train pairs in memory (x4: ~6.6 GB per process). Without it every patch decodes
  # its whole HR PNG, far below an accelerator's step rate (experiments/results/input_pipeline.md): turn it
  # on where the memory is there.
  c.cache_train = False
  # dataset='synthetic': images per epoch (DIV2K's 800) and whole evaluation images, of fixed sizes.
  c.synthetic = ml_collections.ConfigDict({'train_images': 800, 'eval_images': 3})

  c.batch_size = 16                   # Global batch of patch pairs.
  c.num_train_steps = 1_000_000       # Iterations, not epochs.

  c.optimizer = 'adam'
  c.adam_b1 = 0.9
  c.adam_b2 = 0.99
  c.base_learning_rate = 2e-4
  c.lr_reference_batch_size = 16
  c.schedule = 'cosine_restarts'      # Cosine annealing restarted at the end of each period.
  c.lr_restart_periods = (250_000, 250_000, 250_000, 250_000)  # Steps per cosine cycle.
  c.lr_min = 1e-7                     # eta_min: the rate at the end of each cycle.
  # BasicSR's recipe: no weight decay, and the average of the weights (its model zoo's `params_ema`) is
  # what is evaluated and released.
  c.ema_decay = 0.999

  c.eval_folders = ''                 # Comma-separated benchmark folders of HR images, each 'HR_DIR' or 'HR_DIR|LR_DIR'.
  c.eval_max_images = -1              # Evaluate only the first N images of each set (-1: all).
  # Evaluation runs the residual body (where the attention is) on the whole LR image and the upsampling
  # tail in tiles of eval_tile LR pixels: exact whatever the size (pfca_jax/tasks/tiling.py). Images above
  # 2048 x 2048 LR pixels go through the whole network in tiles, with eval_tile_overlap LR pixels of
  # context discarded at inner edges (MSRResNet's receptive radius is ~35).
  c.eval_tile = 160
  c.eval_tile_overlap = 40
  c.eval_num_samples = 3              # LR/bicubic/SR/HR comparison images written per set and evaluation.

  c.eval_every_steps = 5_000
  c.eval_every_epochs = 0.0
  c.checkpoint_every_steps = 5_000
  c.checkpoint_every_epochs = 0.0
  return c


def apply_attention_arg(config: ml_collections.ConfigDict, arg: str | None) -> None:
  """`--config=FILE.py:ATTENTION` selects the attention; an unknown name fails while parsing flags."""
  if arg:
    if arg not in ATTENTIONS:
      raise ValueError(f'unknown attention {arg!r} in the config argument; valid: {", ".join(ATTENTIONS)}')
    config.model.attention = arg


def compare_with_none(config: ml_collections.ConfigDict, arg: str | None, default: str = 'pfca') -> None:
  """The quick starts' `FILE.py[:ATTENTION]`: compare `none` with ATTENTION (default PFCA), one run each."""
  apply_attention_arg(config, arg or default)
  config.compare_attentions = ','.join(dict.fromkeys(('none', config.model.attention)))
