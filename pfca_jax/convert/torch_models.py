"""PyTorch definitions of the networks `pfca_jax.convert` converts, to check conversions against.

Written here from the references' descriptions, with their module names, so that their state dicts
have exactly the names and shapes of the real ones (torchvision's ResNets need none: torchvision has them):

- `MSRResNet`: BasicSR's MSRResNet (x2, x3, x4), optionally with an attention after each block's conv2;
- `cifar_resnet(...)`: the CIFAR ResNets of SimAM's reference code (networks/cifar/resnet.py, block.py),
  optionally with a parameter-free attention wrapped in the way that code wraps it;
- `PFCA`, `SimAM`: the two parameter-free attentions, NCHW, from their formulas;
- `insert_pfca`: PFCA after the last BN of every block of a torchvision ResNet, through forward hooks,
  so that the state dict keeps torchvision's names (what runs an exported PFCA network in PyTorch).

Used by the parity tests and experiments/torch_bridge.py. It imports torch at the top, and pfca_jax never
imports it: PyTorch is not a dependency of the project (docs/pytorch.md).
"""

import torch
import torch.nn.functional as F
from torch import nn


# ---------------------------------------------------------------------------------------------------
# Parameter-free attentions, NCHW. `kind` tells the CIFAR blocks where SimAM's code puts each one.


class PFCA(nn.Module):
  """e = (u - mean_c u)^2 / (4 (var_c u + lam)) + 0.5 with u the per-channel spatial mean and var_c
  the unbiased variance over channels; y = x * sigmoid(e), one weight per (sample, channel)."""
  kind = 'pfca'

  def __init__(self, channels: int | None = None, lam: float = 1e-4):
    super().__init__()
    del channels  # Taken for the CIFAR blocks' calling convention; PFCA works at any width >= 2.
    self.lam = lam

  def forward(self, x):
    u = x.mean(dim=(2, 3))                                    # (N, C)
    dev2 = (u - u.mean(dim=1, keepdim=True)) ** 2
    var = dev2.sum(dim=1, keepdim=True) / (x.shape[1] - 1)
    energy = dev2 / (4 * (var + self.lam)) + 0.5
    return x * torch.sigmoid(energy)[:, :, None, None]


class SimAM(nn.Module):
  """The same energy as PFCA, per pixel over the H x W pixels of each channel."""
  kind = 'simam'

  def __init__(self, channels: int | None = None, lam: float = 1e-4):
    super().__init__()
    del channels
    self.lam = lam

  def forward(self, x):
    pixels = x.shape[2] * x.shape[3]
    dev2 = (x - x.mean(dim=(2, 3), keepdim=True)) ** 2
    var = dev2.sum(dim=(2, 3), keepdim=True) / (pixels - 1)
    return x * torch.sigmoid(dev2 / (4 * (var + self.lam)) + 0.5)


# ---------------------------------------------------------------------------------------------------
# BasicSR's MSRResNet.


class ResidualBlockNoBN(nn.Module):
  """x + conv2(ReLU(conv1(x))); with `attention`, x + attention(conv2(...)) (our attention='pfca'
  placement). The attention is parameter-free, so the state dict is BasicSR's either way."""

  def __init__(self, num_feat: int, attention=None):
    super().__init__()
    self.conv1 = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
    self.conv2 = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
    self.attention = attention(num_feat) if attention is not None else nn.Identity()

  def forward(self, x):
    return x + self.attention(self.conv2(F.relu(self.conv1(x))))


class MSRResNet(nn.Module):
  """conv_first - LeakyReLU(0.1) - body - pixel-shuffle upsampling - conv_hr - LeakyReLU - conv_last,
  plus the bilinear upsampling of the input. x2 and x3 upsample once by the scale (upconv1 has
  num_feat * scale^2 outputs), x4 twice by 2 (upconv1, upconv2, num_feat * 4 outputs each)."""

  def __init__(self, num_in_ch=3, num_out_ch=3, num_feat=64, num_block=16, upscale=4, attention=None):
    super().__init__()
    if upscale not in (2, 3, 4):
      raise ValueError(f'upscale {upscale} is not 2, 3 or 4')
    self.upscale = upscale
    self.conv_first = nn.Conv2d(num_in_ch, num_feat, 3, 1, 1)
    self.body = nn.Sequential(*[ResidualBlockNoBN(num_feat, attention) for _ in range(num_block)])
    step = 2 if upscale == 4 else upscale  # The factor of each pixel shuffle.
    self.upconv1 = nn.Conv2d(num_feat, num_feat * step * step, 3, 1, 1)
    if upscale == 4:
      self.upconv2 = nn.Conv2d(num_feat, num_feat * 4, 3, 1, 1)
    self.pixel_shuffle = nn.PixelShuffle(step)
    self.conv_hr = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
    self.conv_last = nn.Conv2d(num_feat, num_out_ch, 3, 1, 1)
    self.lrelu = nn.LeakyReLU(0.1)

  def forward(self, x):
    out = self.body(self.lrelu(self.conv_first(x)))
    out = self.lrelu(self.pixel_shuffle(self.upconv1(out)))
    if self.upscale == 4:
      out = self.lrelu(self.pixel_shuffle(self.upconv2(out)))
    out = self.conv_last(self.lrelu(self.conv_hr(out)))
    return out + F.interpolate(x, scale_factor=self.upscale, mode='bilinear', align_corners=False)


# ---------------------------------------------------------------------------------------------------
# The CIFAR ResNets of SimAM's reference code.


def _conv(in_channels, out_channels, kernel_size, stride=1):
  return nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=kernel_size // 2, bias=False)


class _CifarBlock(nn.Module):
  expansion = 1
  last_norm = 'bn2'

  def _shortcut(self, in_channels, out_channels, stride):
    """Identity (an empty Sequential) or a strided 1x1 conv + BN, where the shape changes."""
    if stride == 1 and in_channels == out_channels:
      return nn.Sequential()
    return nn.Sequential(_conv(in_channels, out_channels, 1, stride), nn.BatchNorm2d(out_channels))

  def _wrap(self, attention, channels):
    """As SimAM's block.py: SimAM goes after conv2 (the 3x3 conv), any other attention after the last
    BN, by replacing that module with nn.Sequential(module, attention): its names gain a '.0'."""
    if attention is None:
      return
    target = 'conv2' if attention.kind == 'simam' else self.last_norm
    setattr(self, target, nn.Sequential(getattr(self, target), attention(channels)))


class CifarBasicBlock(_CifarBlock):
  """conv3x3 (stride) - BN - ReLU - conv3x3 - BN + shortcut - ReLU."""
  expansion = 1
  last_norm = 'bn2'

  def __init__(self, in_channels, planes, stride=1, attention=None):
    super().__init__()
    self.relu = nn.ReLU()
    self.conv1 = _conv(in_channels, planes, 3, stride)
    self.bn1 = nn.BatchNorm2d(planes)
    self.conv2 = _conv(planes, planes, 3)
    self.bn2 = nn.BatchNorm2d(planes)
    self._wrap(attention, planes)
    self.shortcut = self._shortcut(in_channels, planes, stride)

  def forward(self, x):
    out = self.relu(self.bn1(self.conv1(x)))
    out = self.bn2(self.conv2(out))
    return self.relu(out + self.shortcut(x))


class CifarBottleneck(_CifarBlock):
  """conv1x1 - BN - ReLU - conv3x3 (stride) - BN - ReLU - conv1x1 (x4 wide) - BN + shortcut - ReLU."""
  expansion = 4
  last_norm = 'bn3'

  def __init__(self, in_channels, planes, stride=1, attention=None):
    super().__init__()
    out_channels = planes * self.expansion
    self.relu = nn.ReLU()
    self.conv1 = _conv(in_channels, planes, 1)
    self.bn1 = nn.BatchNorm2d(planes)
    self.conv2 = _conv(planes, planes, 3, stride)
    self.bn2 = nn.BatchNorm2d(planes)
    self.conv3 = _conv(planes, out_channels, 1)
    self.bn3 = nn.BatchNorm2d(out_channels)
    self._wrap(attention, out_channels)
    self.shortcut = self._shortcut(in_channels, out_channels, stride)

  def forward(self, x):
    out = self.relu(self.bn1(self.conv1(x)))
    out = self.relu(self.bn2(self.conv2(out)))
    out = self.bn3(self.conv3(out))
    return self.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
  """3x3 conv stem (16 channels), three stages of widths 16, 32, 64 (strides 1, 2, 2), global average
  pooling and the classifier `linear`."""

  def __init__(self, block, num_blocks, num_classes=100, attention=None):
    super().__init__()
    self.conv1 = _conv(3, 16, 3)
    self.bn1 = nn.BatchNorm2d(16)
    self.relu = nn.ReLU()
    self.avgpool = nn.AdaptiveAvgPool2d(1)
    in_channels = 16
    for i, (count, planes) in enumerate(zip(num_blocks, (16, 32, 64))):
      blocks = []
      for j in range(count):
        blocks.append(block(in_channels, planes, (1 if i == 0 else 2) if j == 0 else 1, attention))
        in_channels = planes * block.expansion
      setattr(self, f'layer{i + 1}', nn.Sequential(*blocks))
    self.linear = nn.Linear(in_channels, num_classes)

  def forward(self, x):
    out = self.relu(self.bn1(self.conv1(x)))
    out = self.layer3(self.layer2(self.layer1(out)))
    return self.linear(torch.flatten(self.avgpool(out), 1))


# Our model name -> (block, blocks per stage) in SimAM's code (its ResNet164 is the bottleneck one).
CIFAR_RESNETS = {
    'cifar_resnet20': (CifarBasicBlock, (3, 3, 3)),
    'cifar_resnet32': (CifarBasicBlock, (5, 5, 5)),
    'cifar_resnet56': (CifarBasicBlock, (9, 9, 9)),
    'cifar_resnet110': (CifarBasicBlock, (18, 18, 18)),
    'cifar_resnet164': (CifarBottleneck, (18, 18, 18)),
}


def cifar_resnet(name: str, num_classes: int = 100, attention=None) -> CifarResNet:
  """SimAM's CIFAR ResNet for our model `name`; `attention`: None, PFCA or SimAM (a class or factory
  with a `kind`)."""
  block, num_blocks = CIFAR_RESNETS[name]
  return CifarResNet(block, num_blocks, num_classes, attention)


# ---------------------------------------------------------------------------------------------------
# PFCA in a torchvision ResNet, and random weights.


def insert_pfca(model, lam: float = 1e-4) -> list:
  """PFCA on the output of the last BN of every block of a torchvision ResNet (bn2 of a BasicBlock,
  bn3 of a Bottleneck), before the residual add: our attention='pfca' placement. A forward hook
  replaces the BN's output, so no module is added or renamed. Returns the hook handles."""
  attention = PFCA(lam=lam)
  handles = []
  for stage in (model.layer1, model.layer2, model.layer3, model.layer4):
    for block in stage:
      last = block.bn3 if hasattr(block, 'bn3') else block.bn2
      handles.append(last.register_forward_hook(lambda module, inputs, output: attention(output)))
  return handles
