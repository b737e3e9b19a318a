"""MSRResNet (modified SRResNet, BasicSR semantics) with attention in each residual block.

Layout and init follow BasicSR's ``MSRResNet``: conv_first - LeakyReLU(0.1) -
``body`` of residual blocks (conv-ReLU-conv, no BN) - pixel-shuffle upsampling
(one x2/x3 step, or two x2 steps for x4) - conv_hr - LeakyReLU - conv_last, plus a
global skip that bilinearly upsamples the input (align_corners=False). Convolution
weights are Kaiming-normal (untruncated, fan_in, gain sqrt(2)) scaled by 0.1, with
zero biases. Names mirror BasicSR, so ``body.3.conv2.weight`` is
``params['body']['3']['conv2']['kernel']``.
"""

import functools
from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp

from pfca_jax.models import layers as layer_sets
from pfca_jax.models.attention import get_attention

ModuleDef = Any
SCALES = (2, 3, 4)
RECONSTRUCT_RADIUS = 2  # LR pixels of context each output pixel of MSRResNet.reconstruct depends on.

# Kaiming-normal has variance 2 / fan_in; scaling the weights by 0.1 scales it by 0.01.
kaiming_x01 = nn.initializers.variance_scaling(2.0 * 0.1**2, 'fan_in', 'normal')


def pixel_shuffle(x: jax.Array, r: int) -> jax.Array:
  """NHWC pixel shuffle with PyTorch's channel order: channel c*r*r + i*r + j -> pixel (i, j) of c."""
  n, h, w, crr = x.shape
  c = crr // (r * r)
  x = x.reshape(n, h, w, c, r, r)
  x = x.transpose(0, 1, 4, 2, 5, 3)
  return x.reshape(n, h * r, w * r, c)


def upsample_bilinear(x: jax.Array, scale: int) -> jax.Array:
  """Bilinear upsampling by an integer factor with align_corners=False semantics.

  jax.image.resize samples at half-pixel centres like PyTorch; at the borders it
  renormalises the triangle weights over the pixels that exist, which for
  upsampling equals PyTorch's clamping of the source coordinate at 0.
  """
  n, h, w, c = x.shape
  return jax.image.resize(x, (n, h * scale, w * scale, c), 'bilinear', antialias=False)


class ResidualBlockNoBN(nn.Module):
  """x + attention(conv2(ReLU(conv1(x)))): attention after conv2, before the identity add.

  `layers.conv_then_attention` is attention(conv2(y)); the fast layer hands conv2's bias to the
  attention unadded, so that conv2 + bias is never stored.
  """
  features: int
  conv: ModuleDef
  attention: ModuleDef
  layers: Any

  @nn.compact
  def __call__(self, x):
    y = nn.relu(self.conv(self.features, name='conv1')(x))
    conv2 = functools.partial(self.conv, self.features, name='conv2')
    attention = functools.partial(self.attention, channels=self.features, name='attention')
    return x + self.layers.conv_then_attention(conv2, attention, y)


class Body(nn.Module):
  """The residual blocks, named '0', '1', ... like BasicSR's make_layer Sequential."""
  num_block: int
  features: int
  conv: ModuleDef
  attention: ModuleDef
  layers: Any

  @nn.compact
  def __call__(self, x):
    for i in range(self.num_block):
      x = ResidualBlockNoBN(self.features, self.conv, self.attention, self.layers, name=str(i))(x)
    return x


class MSRResNet(nn.Module):
  """Attributes:
    scale: upscaling factor, 2, 3 or 4.
    num_feat, num_block, num_in_ch, num_out_ch: as in BasicSR (64, 16, 3, 3).
    attention, attention_options: the attention in each residual block.
    dtype: compute dtype; parameters stay float32 and the output is float32.
    attention_impl: 'fast' (default) or 'reference', the layers the network is built from
      (models/layers.py); same parameters and outputs within float32 rounding.
    conv_impl: with 'fast', how convolutions are lowered: 'auto' (by the platform compiled for),
      'xla' or 'matmul' (models/fast/conv.py: on the CPU, conv_last as one product with all taps).
  """
  scale: int = 4
  num_feat: int = 64
  num_block: int = 16
  num_in_ch: int = 3
  num_out_ch: int = 3
  attention: str = 'none'
  attention_options: Mapping[str, Any] | None = None
  dtype: Any = jnp.float32
  attention_impl: str = 'fast'
  conv_impl: str = 'auto'

  def __post_init__(self):
    if self.scale not in SCALES:
      raise ValueError(f'MSRResNet scale={self.scale!r} is not supported; valid: {SCALES}')
    for field in ('num_feat', 'num_block', 'num_in_ch', 'num_out_ch'):
      value = getattr(self, field)
      if not (isinstance(value, int) and value >= (0 if field == 'num_block' else 1)):
        raise ValueError(f'MSRResNet {field}={value!r} must be a positive integer')
    if self.num_out_ch != self.num_in_ch:
      raise ValueError(f'MSRResNet num_out_ch={self.num_out_ch} must equal num_in_ch={self.num_in_ch}: '
                       'the global skip adds the upsampled input to the output')
    get_attention(self.attention, self.attention_options)
    layer_sets.choose(self.attention_impl, self.conv_impl)
    super().__post_init__()

  def setup(self):
    layers = layer_sets.choose(self.attention_impl, self.conv_impl)
    conv = functools.partial(layers.conv, kernel_size=(3, 3), padding=1, dtype=self.dtype,
                             kernel_init=kaiming_x01, bias_init=nn.initializers.zeros)
    attention = get_attention(self.attention, self.attention_options)
    self.conv_first = conv(self.num_feat)
    self.body = Body(self.num_block, self.num_feat, conv, attention, layers)
    self.upconv1 = conv(self.num_feat * (4 if self.scale == 4 else self.scale**2))
    if self.scale == 4:
      self.upconv2 = conv(self.num_feat * 4)
    self.conv_hr = conv(self.num_feat)
    self.conv_last = conv(self.num_out_ch)

  def __call__(self, x, train: bool = False):
    del train  # No BatchNorm or dropout: training and inference are the same function.
    return self.reconstruct(self.features(x), x)

  def features(self, x):
    """conv_first and the residual body: the LR-resolution feature map, where every attention is.

    Channel attention averages over the whole map, so this part must see the whole image; the rest
    (`reconstruct`) only looks a few pixels around each output pixel and can be run in tiles
    (pfca_jax/tasks/tiling.py).
    """
    if x.ndim != 4 or x.shape[-1] != self.num_in_ch:
      raise ValueError(f'MSRResNet expects NHWC input with {self.num_in_ch} channels, got shape {x.shape}')
    lrelu = functools.partial(nn.leaky_relu, negative_slope=0.1)
    return self.body(lrelu(self.conv_first(x.astype(self.dtype))))

  def reconstruct(self, feat, x):
    """Pixel-shuffle upsampling of `feat` to the output, plus the bilinear upsampling of the input x.

    Receptive radius in LR pixels: 1 (upconv1) + 1/2 (upconv2, x4) + 2/scale (conv_hr, conv_last at
    HR), and 1 for the bilinear skip, so at most 2: `RECONSTRUCT_RADIUS`.
    """
    lrelu = functools.partial(nn.leaky_relu, negative_slope=0.1)
    out = feat.astype(self.dtype)
    if self.scale == 4:
      out = lrelu(pixel_shuffle(self.upconv1(out), 2))
      out = lrelu(pixel_shuffle(self.upconv2(out), 2))
    else:
      out = lrelu(pixel_shuffle(self.upconv1(out), self.scale))
    out = self.conv_last(lrelu(self.conv_hr(out)))
    base = upsample_bilinear(x.astype(jnp.float32), self.scale)
    return out.astype(jnp.float32) + base
