"""Which network a PyTorch state dict holds, read from its names and shapes alone.

Used to fill in what a file fixes (the number of classes, MSRResNet's scale, width and depth) and to
say what a file is when it is not the model that was asked for: "it holds resnet18's weights".
"""

import re

from pfca_jax.models import MODELS, resnet

# Where each model's PyTorch definition comes from, for messages.
REFERENCES = {'resnet': "torchvision's", 'cifar_resnet': "SimAM's reference code's", 'msrresnet': "BasicSR's"}


def reference(model_name: str) -> str:
  family = 'msrresnet' if model_name == 'msrresnet' else 'cifar_resnet' if model_name.startswith('cifar_') else 'resnet'
  return REFERENCES[family]


def _count(state: dict, pattern: str) -> int:
  """How many distinct values the number group of `pattern` takes among the names."""
  found = {match.group(1) for name in state if (match := re.match(pattern, name))}
  return len(found)


def _resnet_name(stage_sizes: tuple[int, ...], bottleneck: bool, cifar: bool) -> str | None:
  block = resnet.Bottleneck if bottleneck else resnet.BasicBlock
  for name, (ctor, _) in MODELS.items():
    keywords = getattr(ctor, 'keywords', {})
    if (name.startswith('cifar_') == cifar and tuple(keywords.get('stage_sizes', ())) == stage_sizes
        and keywords.get('block_cls') is block):
      return name
  return None


def recognise(state: dict) -> tuple[str, dict] | None:
  """(model name, create options the file fixes) of a state dict with PyTorch names, or None.

  The options are `num_classes` for the ResNets and `scale`, `num_feat`, `num_block`, `num_in_ch`,
  `num_out_ch` for MSRResNet. A state dict whose key arrays are malformed (wrong number of dimensions,
  zero channels) is not recognised: the strict check then names the array.
  """
  try:
    return _recognise(state)
  except (ValueError, IndexError, ZeroDivisionError):
    return None


def _recognise(state: dict) -> tuple[str, dict] | None:
  shape = lambda name: tuple(state[name].shape)
  if 'conv_first.weight' in state and 'upconv1.weight' in state and 'conv_last.weight' in state:
    num_feat, num_in_ch = shape('conv_first.weight')[:2]
    if 'upconv2.weight' in state:
      scale = 4
    else:
      ratio = shape('upconv1.weight')[0] // num_feat
      scale = {4: 2, 9: 3}.get(ratio, 0)
    options = dict(scale=scale, num_feat=num_feat, num_block=_count(state, r'^body\.(\d+)\.'), num_in_ch=num_in_ch,
                   num_out_ch=shape('conv_last.weight')[0])
    return 'msrresnet', options
  cifar = 'linear.weight' in state
  classifier = 'linear.weight' if cifar else 'fc.weight'
  if classifier not in state or 'layer1.0.conv1.weight' not in state:
    return None
  stages = tuple(_count(state, rf'^layer{i}\.(\d+)\.') for i in range(1, 5))
  stages = tuple(n for n in stages if n)
  bottleneck = 'layer1.0.conv3.weight' in state
  name = _resnet_name(stages, bottleneck, cifar)
  return (name, {'num_classes': shape(classifier)[0]}) if name else None


def describe(found: tuple[str, dict] | None) -> str:
  """'resnet18 (num_classes=10)' or 'msrresnet (scale=2, num_feat=64, ...)' for messages."""
  if found is None:
    return 'no network this project knows'
  name, options = found
  return f'{name} ({", ".join(f"{k}={v}" for k, v in options.items())})'
