"""The PyTorch side of the parity tests: reference networks written here, and random weights.

The definitions below are the tests' own, written from the references' code and from the formulas of
the project's contract, and share no code with `pfca_jax` (the converter keeps its own copy,
`pfca_jax.convert.torch_models`, for its users): a mistake made in that copy and in our JAX models
alike would pass a comparison between the two, and cannot pass one with these.

- `PFCA`: from its formula (mean of each channel, energy of its distance from the mean of the channel
  means normalised by their unbiased variance, sigmoid gate);
- `SimAM`: ZjjConan/SimAM networks/attentions/simam_module.py (the energy per pixel, n = H * W - 1);
- `cifar_resnet(...)`: ZjjConan/SimAM networks/cifar/resnet.py and block.py (BasicBlock, BottleNect and
  the way they wrap an attention in an nn.Sequential);
- `MSRResNet`, `ResidualBlockNoBN`: XPixelGroup/BasicSR basicsr/archs/srresnet_arch.py and
  arch_util.py, plus our attention='pfca' placement after each block's conv2;
- `insert_pfca`: PFCA after the last BN of each block of a torchvision ResNet, through forward hooks.

Module attribute names are the references' own, so that their state dicts (what the converter reads)
have the same keys, in the same order, with the same shapes. Parameters are left at PyTorch's
default initialisation: `randomise` redraws every convolution and BN anyway.
This module imports torch at the top: import it only when PyTorch is installed.
"""

import math

import torch
import torch.nn.functional as F
from torch import nn


# ---------------------------------------------------------------------------------------------------
# Parameter-free attentions, NCHW. `get_module_name` is how SimAM's blocks decide where an attention
# goes (after conv2 for 'simam', after the last BN for anything else), so ours answer it too.


class PFCA(nn.Module):
  """u = spatial mean of each channel (N, C); mu, var = mean and unbiased variance of u over C;
  e = (u - mu)^2 / (4 (var + lam)) + 0.5; y = x * sigmoid(e), one gate per sample and channel."""

  def __init__(self, channels=None, lam=1e-4):
    super().__init__()
    del channels  # SimAM's blocks pass the width; PFCA has no parameters to size.
    self.lam = lam  # A float, not a buffer: the state dict stays the plain network's.

  @staticmethod
  def get_module_name():
    return 'pfca'

  def forward(self, x):
    u = x.mean(dim=(2, 3))
    mu = u.mean(dim=1, keepdim=True)
    # torch.var with correction=1 divides by C - 1: computed another way than the sum the JAX side writes.
    var = torch.var(u, dim=1, correction=1, keepdim=True)
    energy = (u - mu).square() / (4 * (var + self.lam)) + 0.5
    return x * torch.sigmoid(energy).view(x.shape[0], x.shape[1], 1, 1)


class SimAM(nn.Module):
  """SimAM's simam_module: per sample and channel, d = (x - mean_hw x)^2,
  e = d / (4 (sum_hw d / (H W - 1) + lam)) + 0.5, y = x * sigmoid(e)."""

  def __init__(self, channels=None, e_lambda=1e-4):
    super().__init__()
    del channels
    self.e_lambda = e_lambda
    self.activaton = nn.Sigmoid()  # The reference's spelling; it has no parameters either way.

  @staticmethod
  def get_module_name():
    return 'simam'

  def forward(self, x):
    n = x.shape[2] * x.shape[3] - 1
    d = (x - x.mean(dim=[2, 3], keepdim=True)).pow(2)
    return x * self.activaton(d / (4 * (d.sum(dim=[2, 3], keepdim=True) / n + self.e_lambda)) + 0.5)


# ---------------------------------------------------------------------------------------------------
# BasicSR's MSRResNet (basicsr/archs/srresnet_arch.py) and its block (basicsr/archs/arch_util.py).


class ResidualBlockNoBN(nn.Module):
  """BasicSR's arch_util.ResidualBlockNoBN: x + res_scale * conv2(ReLU(conv1(x))), 3x3 convs with
  biases. `attention` (ours, not BasicSR's) goes on conv2's output, before the identity add; it has no
  parameters, so the state dict is BasicSR's with or without it."""

  def __init__(self, num_feat=64, res_scale=1, attention=None):
    super().__init__()
    self.res_scale = res_scale
    self.conv1 = nn.Conv2d(num_feat, num_feat, 3, 1, 1, bias=True)
    self.conv2 = nn.Conv2d(num_feat, num_feat, 3, 1, 1, bias=True)
    self.relu = nn.ReLU()
    self.attention = nn.Identity() if attention is None else attention(num_feat)

  def forward(self, x):
    return x + self.attention(self.conv2(self.relu(self.conv1(x)))) * self.res_scale


class MSRResNet(nn.Module):
  """BasicSR's srresnet_arch.MSRResNet: conv_first, LeakyReLU(0.1), the body of blocks, pixel-shuffle
  upsampling (x2, x3: upconv1 to num_feat * scale^2 channels, one shuffle; x4: upconv1 and upconv2 to
  num_feat * 4 each, a shuffle by 2 after each), conv_hr, LeakyReLU, conv_last, plus the input
  upsampled bilinearly (align_corners=False)."""

  def __init__(self, num_in_ch=3, num_out_ch=3, num_feat=64, num_block=16, upscale=4, attention=None):
    super().__init__()
    if upscale not in (2, 3, 4):  # BasicSR would build a network without upconv1 and fail later.
      raise ValueError(f'MSRResNet upscale={upscale} is not 2, 3 or 4')
    self.upscale = upscale
    self.conv_first = nn.Conv2d(num_in_ch, num_feat, 3, 1, 1)
    self.body = nn.Sequential(*(ResidualBlockNoBN(num_feat=num_feat, attention=attention)
                                for _ in range(num_block)))
    if upscale == 4:
      self.upconv1 = nn.Conv2d(num_feat, num_feat * 4, 3, 1, 1)
      self.upconv2 = nn.Conv2d(num_feat, num_feat * 4, 3, 1, 1)
      self.pixel_shuffle = nn.PixelShuffle(2)
    else:
      self.upconv1 = nn.Conv2d(num_feat, num_feat * upscale * upscale, 3, 1, 1)
      self.pixel_shuffle = nn.PixelShuffle(upscale)
    self.conv_hr = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
    self.conv_last = nn.Conv2d(num_feat, num_out_ch, 3, 1, 1)
    self.lrelu = nn.LeakyReLU(negative_slope=0.1)

  def forward(self, x):
    out = self.body(self.lrelu(self.conv_first(x)))
    out = self.lrelu(self.pixel_shuffle(self.upconv1(out)))
    if self.upscale == 4:
      out = self.lrelu(self.pixel_shuffle(self.upconv2(out)))
    out = self.conv_last(self.lrelu(self.conv_hr(out)))
    return out + F.interpolate(x, scale_factor=self.upscale, mode='bilinear', align_corners=False)


# ---------------------------------------------------------------------------------------------------
# SimAM's CIFAR ResNets (networks/cifar/resnet.py, networks/cifar/block.py). ReLUs and the residual
# add are out of place here (in place there): the same values, and safe under hooks and deepcopy.


def conv3x3(in_channels, ou_channels, stride=1):
  return nn.Conv2d(in_channels, ou_channels, kernel_size=3, stride=stride, padding=1, bias=False)


def conv1x1(in_channels, ou_channels, stride=1):
  return nn.Conv2d(in_channels, ou_channels, kernel_size=1, stride=stride, padding=0, bias=False)


def _shortcut(in_channels, out_channels, stride):
  """block.py's option: identity (an empty nn.Sequential, no names) unless the stride or the width
  changes, then a strided 1x1 conv and a BN (names `shortcut.0`, `shortcut.1`)."""
  if stride == 1 and in_channels == out_channels:
    return nn.Sequential()
  return nn.Sequential(conv1x1(in_channels, out_channels, stride=stride), nn.BatchNorm2d(out_channels))


def _wrap(block, attention_module, channels, other_target):
  """block.py: SimAM becomes nn.Sequential(conv2, simam) and any other attention
  nn.Sequential(<last BN>, attention), so the wrapped module's keys gain a `.0`."""
  if attention_module is None:
    return
  target = 'conv2' if attention_module.get_module_name() == 'simam' else other_target
  setattr(block, target, nn.Sequential(getattr(block, target), attention_module(channels)))


class BasicBlock(nn.Module):
  """conv3x3 (stride) - BN - ReLU - conv3x3 - BN, + shortcut, ReLU."""
  EXPANSION = 1

  def __init__(self, in_channels, ou_channels, stride=1, attention_module=None):
    super().__init__()
    self.relu = nn.ReLU()
    self.conv1 = conv3x3(in_channels, ou_channels, stride=stride)
    self.bn1 = nn.BatchNorm2d(ou_channels)
    self.conv2 = conv3x3(ou_channels, ou_channels * self.EXPANSION)
    self.bn2 = nn.BatchNorm2d(ou_channels * self.EXPANSION)
    _wrap(self, attention_module, ou_channels * self.EXPANSION, 'bn2')
    self.shortcut = _shortcut(in_channels, ou_channels * self.EXPANSION, stride)

  def forward(self, x):
    out = self.relu(self.bn1(self.conv1(x)))
    out = self.bn2(self.conv2(out))
    return self.relu(out + self.shortcut(x))


class BottleNect(nn.Module):
  """The reference's name and layout: conv1x1 - BN - ReLU - conv3x3 (stride) - BN - ReLU -
  conv1x1 (4x wider) - BN, + shortcut, ReLU."""
  EXPANSION = 4

  def __init__(self, in_channels, ou_channels, stride=1, attention_module=None):
    super().__init__()
    self.relu = nn.ReLU()
    self.conv1 = conv1x1(in_channels, ou_channels)
    self.bn1 = nn.BatchNorm2d(ou_channels)
    self.conv2 = conv3x3(ou_channels, ou_channels, stride=stride)
    self.bn2 = nn.BatchNorm2d(ou_channels)
    self.conv3 = conv1x1(ou_channels, ou_channels * self.EXPANSION)
    self.bn3 = nn.BatchNorm2d(ou_channels * self.EXPANSION)
    _wrap(self, attention_module, ou_channels * self.EXPANSION, 'bn3')
    self.shortcut = _shortcut(in_channels, ou_channels * self.EXPANSION, stride)

  def forward(self, x):
    out = self.relu(self.bn1(self.conv1(x)))
    out = self.relu(self.bn2(self.conv2(out)))
    out = self.bn3(self.conv3(out))
    return self.relu(out + self.shortcut(x))


class ResNet(nn.Module):
  """resnet.py's ResNet: conv3x3 stem to 16 channels, BN, ReLU; stages of widths 16, 32, 64 with
  strides 1, 2, 2 (on each stage's first block); global average pool; the classifier `linear`."""

  def __init__(self, block, num_blocks, num_class=10, attention_module=None):
    super().__init__()
    self.in_channels = num_filters = 16
    self.conv1 = conv3x3(3, self.in_channels)
    self.bn1 = nn.BatchNorm2d(self.in_channels)
    self.relu = nn.ReLU()
    self.avgpool = nn.AdaptiveAvgPool2d(1)
    self.layer1 = self._make_layer(block, num_filters, num_blocks[0], 1, attention_module)
    self.layer2 = self._make_layer(block, num_filters * 2, num_blocks[1], 2, attention_module)
    self.layer3 = self._make_layer(block, num_filters * 4, num_blocks[2], 2, attention_module)
    self.linear = nn.Linear(num_filters * 4 * block.EXPANSION, num_class)

  def _make_layer(self, block, ou_channels, count, stride, attention_module):
    layers = []
    for s in [stride] + [1] * (count - 1):
      layers.append(block(self.in_channels, ou_channels, s, attention_module=attention_module))
      self.in_channels = ou_channels * block.EXPANSION
    return nn.Sequential(*layers)

  def forward(self, x):
    out = self.relu(self.bn1(self.conv1(x)))
    out = self.layer3(self.layer2(self.layer1(out)))
    return self.linear(self.avgpool(out).flatten(1))


# resnet.py's ResNet20/32/56/110 with BasicBlock, and its ResNet164 with BottleNect (the usual
# pairing, and the one of the project's parameter counts), keyed by our model names.
CIFAR_RESNETS = {
    'cifar_resnet20': (BasicBlock, [3, 3, 3]),
    'cifar_resnet32': (BasicBlock, [5, 5, 5]),
    'cifar_resnet56': (BasicBlock, [9, 9, 9]),
    'cifar_resnet110': (BasicBlock, [18, 18, 18]),
    'cifar_resnet164': (BottleNect, [18, 18, 18]),
}


def cifar_resnet(name, num_classes=100, attention=None):
  """SimAM's CIFAR ResNet for our model `name`; `attention`: None, PFCA or SimAM (or anything with a
  static `get_module_name`, called with the width, as SimAM's attention_module is)."""
  block, num_blocks = CIFAR_RESNETS[name]
  return ResNet(block, num_blocks, num_class=num_classes, attention_module=attention)


# ---------------------------------------------------------------------------------------------------
# PFCA in a torchvision ResNet.


def insert_pfca(model, lam=1e-4):
  """PFCA on the output of each block's last BN (bn2 of torchvision's BasicBlock, bn3 of its
  Bottleneck), i.e. before the residual add, as the project places it. A forward hook returns the
  replacement output, so the model keeps torchvision's state dict. Returns the hook handles."""
  pfca = PFCA(lam=lam)
  handles = []
  for stage in (model.layer1, model.layer2, model.layer3, model.layer4):
    for block in stage:
      last_bn = block.bn3 if type(block).__name__ == 'Bottleneck' else block.bn2
      handles.append(last_bn.register_forward_hook(lambda module, inputs, output: pfca(output)))
  return handles


# ---------------------------------------------------------------------------------------------------
# Random weights far from any initialisation.


def randomise(model: nn.Module, seed: int = 0, conv_gain: float = 1.0, calibration=None) -> nn.Module:
  """Redraws every convolution and BN of `model` under torch.manual_seed(seed), returns it in eval mode.

  Convolution weights: normal with std conv_gain * sqrt(2 / fan_in) (He), so that every layer matters
  to the output (PyTorch's default init shrinks activations by about sqrt(3) per layer, BasicSR's by
  10). Convolution biases: U(-0.2, 0.2). BatchNorms: weight U(0.5, 1.5), bias U(-0.5, 0.5),
  num_batches_tracked 7 (a converter writes 0), and running statistics U(-0.5, 0.5) (mean) and
  U(0.5, 2) (var), or, given a `calibration` batch (NCHW), scaled to each BN's input on that batch
  (`_calibrate`). Linear layers keep their init.

  Why calibrate: with fixed statistics a deep ResNet's activations grow block after block (~1e7 at
  the logits of resnet152), until every BN's bias and mean are rounding noise next to its input and a
  converter that mixed them up would still pass.
  """
  torch.manual_seed(seed)
  norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
  with torch.no_grad():
    for module in model.modules():
      if isinstance(module, nn.Conv2d):
        fan_in = module.weight[0].numel()
        module.weight.normal_(0.0, conv_gain * math.sqrt(2.0 / fan_in))
        if module.bias is not None:
          module.bias.uniform_(-0.2, 0.2)
    for norm in norms:
      norm.weight.uniform_(0.5, 1.5)
      norm.bias.uniform_(-0.5, 0.5)
      norm.running_mean.uniform_(-0.5, 0.5)
      norm.running_var.uniform_(0.5, 2.0)
      norm.num_batches_tracked.fill_(7)
    if calibration is not None:
      _calibrate(model.eval(), norms, calibration)
  return model.eval()


def _calibrate(model, norms, batch):
  """Sets each BN's statistics from the root mean square r of its input on `batch`, per channel:
  running_mean r * U(-0.5, 0.5), running_var r^2 * U(0.5, 2), so that its output is of order 1.

  The actual mean and variance would normalise better but make the float32 comparison ill-conditioned
  (x - mean cancels where a channel's mean is large next to its spread; measured on resnet152: 9e-5
  apart from PyTorch that way, 2e-5 this way, which is PyTorch's own float32 error against float64).
  One eval-mode pass: a hook runs before each BN, once every BN before it has been set.
  """
  def set_statistics(norm, inputs):
    rms = inputs[0].square().mean(dim=(0, 2, 3)).sqrt()
    norm.running_mean.copy_(rms * torch.empty_like(rms).uniform_(-0.5, 0.5))
    norm.running_var.copy_(rms.square() * torch.empty_like(rms).uniform_(0.5, 2.0) + 1e-3)

  handles = [norm.register_forward_pre_hook(set_statistics) for norm in norms]
  try:
    model(batch)
  finally:
    for handle in handles:
      handle.remove()
