"""ResNets for ImageNet (v1.5, torchvision layout) and CIFAR (SimAM reference layout).

Submodule names mirror the PyTorch references, so that a state dict maps onto the
parameter tree mechanically: torchvision's ``layer2.0.downsample.1.weight`` is
``params['layer2']['0']['downsample']['1']['scale']``. The CIFAR reference calls
its classifier ``linear`` and its projection ``shortcut``; here they are ``fc`` and
``downsample`` like torchvision's, so that one module serves both families.

Blocks receive ``conv``, ``norm`` and ``attention`` as ready-made partials, and ``layers``
(models/layers.py) for the two places where the fast implementation computes differently: a norm
followed by attention, and the block's output. The block code is the same for both.
"""

import functools
from typing import Any, Callable, ClassVar, Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from pfca_jax.models import layers as layer_sets
from pfca_jax.models.attention import get_attention

ModuleDef = Any

POSITIONS = ('auto', 'post_bn', 'post_conv')
STEMS = ('imagenet', 'cifar')

# torchvision's init: Kaiming-normal (untruncated) with fan_out for convolutions, and
# PyTorch Linear's default U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for the classifier.
conv_init = nn.initializers.variance_scaling(2.0, 'fan_out', 'normal')
dense_init = nn.initializers.variance_scaling(1.0 / 3.0, 'fan_in', 'uniform')


def resolve_position(attention: str, position: str) -> str:
  """'auto' is each module's reference placement: SimAM after the 3x3 conv, the rest after the last BN."""
  if position not in POSITIONS:
    raise ValueError(f'unknown attention_position {position!r}; valid: {", ".join(POSITIONS)}')
  if position == 'auto':
    return 'post_conv' if attention == 'simam' else 'post_bn'
  return position


class Downsample(nn.Module):
  """The projection shortcut: 1x1 conv (strided) + BN, named '0' and '1' as in nn.Sequential."""
  features: int
  strides: int
  conv: ModuleDef
  norm: ModuleDef

  @nn.compact
  def __call__(self, x):
    x = self.conv(self.features, (1, 1), strides=self.strides, padding=0, name='0')(x)
    return self.norm(name='1')(x)


class _Block(nn.Module):
  """Shared shortcut and attention plumbing of both residual blocks.

  Attributes:
    features: the bottleneck width ("planes"); the block outputs features * expansion.
    attention_position: 'post_bn' puts attention after the branch's last BN (before
      the residual add); 'post_conv' puts it after the 3x3 conv, before its BN.
    zero_init_last_bn: start the last BN's scale at zero, so the block begins as
      identity. Attention placed after that BN then sees zeros at step 0 (PFCA
      returns zeros times 0.62, i.e. zeros), which is harmless.
  """
  features: int
  strides: int
  conv: ModuleDef
  norm: ModuleDef
  attention: ModuleDef
  attention_position: str = 'post_bn'
  zero_init_last_bn: bool = False
  layers: Any = layer_sets.Reference()
  act: Callable = nn.relu
  expansion: ClassVar[int] = 1

  @property
  def out_features(self) -> int:
    return self.features * self.expansion

  def conv3x3(self, y, strides, name):
    y = self.conv(self.features, (3, 3), strides=strides, padding=1, name=name)(y)
    if self.attention_position == 'post_conv':
      y = self.attention(channels=self.features, name='attention')(y)
    return y

  def last_norm(self, y, name):
    scale_init = nn.initializers.zeros if self.zero_init_last_bn else nn.initializers.ones
    norm = functools.partial(self.norm, scale_init=scale_init, name=name)
    if self.attention_position != 'post_bn':
      return norm()(y)
    attention = functools.partial(self.attention, channels=self.out_features, name='attention')
    return self.layers.norm_then_attention(norm, attention, y)

  def add_shortcut(self, x, y):
    if self.strides != 1 or x.shape[-1] != self.out_features:
      x = Downsample(self.out_features, self.strides, self.conv, self.norm, name='downsample')(x)
    return self.layers.residual_output(self.act(x + y))


class BasicBlock(_Block):
  """conv3x3 - BN - ReLU - conv3x3 - BN (+ attention) + shortcut - ReLU."""
  expansion: ClassVar[int] = 1

  @nn.compact
  def __call__(self, x):
    y = self.conv(self.features, (3, 3), strides=self.strides, padding=1, name='conv1')(x)
    y = self.act(self.norm(name='bn1')(y))
    y = self.conv3x3(y, 1, 'conv2')
    y = self.last_norm(y, 'bn2')
    return self.add_shortcut(x, y)


class Bottleneck(_Block):
  """conv1x1 - BN - ReLU - conv3x3 (stride, v1.5) - BN - ReLU - conv1x1 - BN (+ attention) + shortcut - ReLU."""
  expansion: ClassVar[int] = 4

  @nn.compact
  def __call__(self, x):
    y = self.conv(self.features, (1, 1), padding=0, name='conv1')(x)
    y = self.act(self.norm(name='bn1')(y))
    y = self.conv3x3(y, self.strides, 'conv2')
    y = self.act(self.norm(name='bn2')(y))
    y = self.conv(self.out_features, (1, 1), padding=0, name='conv3')(y)
    y = self.last_norm(y, 'bn3')
    return self.add_shortcut(x, y)


class Stage(nn.Module):
  """A run of blocks named '0', '1', ... like a PyTorch nn.Sequential layer."""
  block_cls: ModuleDef
  num_blocks: int
  features: int
  strides: int

  @nn.compact
  def __call__(self, x):
    for i in range(self.num_blocks):
      x = self.block_cls(features=self.features, strides=self.strides if i == 0 else 1, name=str(i))(x)
    return x


class ResNet(nn.Module):
  """ResNet with a pluggable channel attention in every residual block.

  Attributes:
    stage_sizes: blocks per stage (layer1, layer2, ...).
    block_cls: BasicBlock or Bottleneck.
    num_classes: width of the classifier `fc`.
    widths: bottleneck widths per stage; the stem has widths[0] channels.
    stem: 'imagenet' (7x7/2 conv, BN, ReLU, 3x3/2 max-pool) or 'cifar' (3x3 conv, BN, ReLU).
    attention: a name from attention.ATTENTIONS.
    attention_options: keyword options of that attention (e.g. {'lam': 1e-3}).
    attention_position: 'auto' (SimAM post_conv, others post_bn: each module's
      reference placement), 'post_bn' or 'post_conv'.
    dtype: compute dtype; parameters and BN statistics stay float32, logits are float32.
    zero_init_last_bn: see _Block.
    attention_impl: 'fast' (default) or 'reference', the layers the network is built from
      (models/layers.py); same variables and outputs within float32 rounding.
    conv_impl: with 'fast', how convolutions are lowered: 'auto' (by the platform compiled for),
      'xla' or 'matmul' (models/fast/conv.py).
  """
  stage_sizes: Sequence[int]
  block_cls: ModuleDef
  num_classes: int = 1000
  widths: Sequence[int] = (64, 128, 256, 512)
  stem: str = 'imagenet'
  attention: str = 'none'
  attention_options: Mapping[str, Any] | None = None
  attention_position: str = 'auto'
  dtype: Any = jnp.float32
  zero_init_last_bn: bool = False
  attention_impl: str = 'fast'
  conv_impl: str = 'auto'

  def __post_init__(self):
    if self.stem not in STEMS:
      raise ValueError(f'unknown stem {self.stem!r}; valid: {", ".join(STEMS)}')
    if len(self.widths) != len(self.stage_sizes):
      raise ValueError(f'widths {tuple(self.widths)} and stage_sizes {tuple(self.stage_sizes)} differ in length')
    if not (isinstance(self.num_classes, int) and self.num_classes >= 1):
      raise ValueError(f'num_classes={self.num_classes!r} must be a positive integer')
    get_attention(self.attention, self.attention_options)
    resolve_position(self.attention, self.attention_position)
    layer_sets.choose(self.attention_impl, self.conv_impl)
    super().__post_init__()

  @nn.compact
  def __call__(self, x, train: bool = False):
    if x.ndim != 4:
      raise ValueError(f'ResNet expects NHWC input (4 dims), got shape {x.shape}')
    layers = layer_sets.choose(self.attention_impl, self.conv_impl)
    conv = functools.partial(layers.conv, use_bias=False, dtype=self.dtype, kernel_init=conv_init)
    # PyTorch's BN momentum 0.1 is flax's 0.9 (the weight of the running average).
    norm = functools.partial(layers.batch_norm, use_running_average=not train, momentum=0.9,
                             epsilon=1e-5, dtype=self.dtype)
    block = functools.partial(
        self.block_cls, conv=conv, norm=norm, layers=layers,
        attention=get_attention(self.attention, self.attention_options),
        attention_position=resolve_position(self.attention, self.attention_position),
        zero_init_last_bn=self.zero_init_last_bn)

    x = x.astype(self.dtype)
    if self.stem == 'imagenet':
      x = conv(self.widths[0], (7, 7), strides=2, padding=3, name='conv1')(x)
      x = nn.relu(norm(name='bn1')(x))
      x = layers.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
    else:
      x = conv(self.widths[0], (3, 3), padding=1, name='conv1')(x)
      x = nn.relu(norm(name='bn1')(x))
    for i, (size, width) in enumerate(zip(self.stage_sizes, self.widths)):
      x = Stage(block, size, width, 1 if i == 0 else 2, name=f'layer{i + 1}')(x)
    x = jnp.mean(x, axis=(1, 2))
    # PyTorch draws a Linear's bias from U(-1/sqrt(fan_in), 1/sqrt(fan_in)); a flax
    # bias init does not see fan_in, so the bound is bound here.
    bias_init = _symmetric_uniform(x.shape[-1] ** -0.5)
    x = nn.Dense(self.num_classes, dtype=self.dtype, kernel_init=dense_init,
                 bias_init=bias_init, name='fc')(x)
    return x.astype(jnp.float32)


def _symmetric_uniform(bound: float):
  def init(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, -bound, bound)
  return init


ResNet18 = functools.partial(ResNet, stage_sizes=(2, 2, 2, 2), block_cls=BasicBlock)
ResNet34 = functools.partial(ResNet, stage_sizes=(3, 4, 6, 3), block_cls=BasicBlock)
ResNet50 = functools.partial(ResNet, stage_sizes=(3, 4, 6, 3), block_cls=Bottleneck)
ResNet101 = functools.partial(ResNet, stage_sizes=(3, 4, 23, 3), block_cls=Bottleneck)
ResNet152 = functools.partial(ResNet, stage_sizes=(3, 8, 36, 3), block_cls=Bottleneck)

_cifar = functools.partial(ResNet, num_classes=100, widths=(16, 32, 64), stem='cifar')
CifarResNet20 = functools.partial(_cifar, stage_sizes=(3, 3, 3), block_cls=BasicBlock)
CifarResNet32 = functools.partial(_cifar, stage_sizes=(5, 5, 5), block_cls=BasicBlock)
CifarResNet56 = functools.partial(_cifar, stage_sizes=(9, 9, 9), block_cls=BasicBlock)
CifarResNet110 = functools.partial(_cifar, stage_sizes=(18, 18, 18), block_cls=BasicBlock)
CifarResNet164 = functools.partial(_cifar, stage_sizes=(18, 18, 18), block_cls=Bottleneck)
