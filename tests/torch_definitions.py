"""Test-only parts of the PyTorch side of the parity tests: random weights far from any initialisation.

The definitions themselves are in `pfca_jax.convert.torch_models` (re-exported here for the tests).
This module imports torch at the top: import it only when PyTorch is installed.
"""

import math

import torch
from torch import nn

from pfca_jax.convert.torch_models import (MSRResNet, PFCA, ResidualBlockNoBN, SimAM,  # noqa: F401
                                           cifar_resnet, insert_pfca)


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
