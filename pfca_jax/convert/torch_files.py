"""Reading and writing PyTorch checkpoint files (.pth): the one place that needs PyTorch installed.

PyTorch is not a dependency of pfca_jax; it is imported here only when a .pth file is read or
written (`pip install torch`, docs/pytorch.md). Files are read with `torch.load(weights_only=True)`,
which unpickles tensors and plain containers only, never arbitrary code.

What a file may hold, in the order it is looked for:
- BasicSR's checkpoints: {'params_ema': state dict, 'params': state dict} (the EMA weights preferred,
  as BasicSR's model zoo releases them), or {'params': ...} alone;
- a training script's checkpoint {'state_dict': ...} or {'model': ...} (SimAM's reference code saves
  the former, under nn.DataParallel's `module.` prefix, which the converter drops);
- a bare state dict {name: tensor} (torchvision's weights, `torch.save(model.state_dict())`).
"""

import os

import numpy as np

from pfca_jax.errors import UserError

# Keys of a checkpoint dict that hold a state dict, most preferred first.
STATE_KEYS = ('params_ema', 'params', 'state_dict', 'model')


def import_torch():
  """The torch module, or a one-line UserError saying how to install it."""
  try:
    import torch
  except ImportError:
    raise UserError('reading or writing a PyTorch .pth file needs PyTorch, which pfca_jax does not install: '
                    'pip install torch (any recent version; docs/pytorch.md)') from None
  return torch


def _is_state_dict(value) -> bool:
  return isinstance(value, dict) and bool(value) and all(
      isinstance(k, str) and hasattr(v, 'shape') for k, v in value.items())


def read(path: str) -> tuple[dict, str | None]:
  """(state dict, the key it was found under or None for a bare one) of a .pth file.

  Raises UserError, one line, for a missing file, one torch.load cannot read, and one holding no state dict.
  """
  if not os.path.exists(path):
    raise UserError(f'{path} does not exist')
  if not os.path.isfile(path):
    raise UserError(f'{path} is not a file (a PyTorch checkpoint, .pth)')
  torch = import_torch()
  try:
    content = torch.load(path, map_location='cpu', weights_only=True)
  except Exception as e:  # noqa: BLE001 -- pickle, zip and torch errors alike: the file is not readable.
    first = next((line.strip() for line in str(e).splitlines() if line.strip()), type(e).__name__)
    raise UserError(f'{path} is not a PyTorch checkpoint that torch.load can read ({first[:160]})') from None
  if _is_state_dict(content):
    return content, None
  if isinstance(content, dict):
    for key in STATE_KEYS:
      if _is_state_dict(content.get(key)):
        return content[key], key
    keys = ', '.join(map(repr, list(content)[:8])) or 'none'
    raise UserError(f'{path} holds a dict without a state dict (its keys: {keys}); expected a state dict of tensors '
                    f'or one under {", ".join(map(repr, STATE_KEYS))}')
  raise UserError(f'{path} holds a {type(content).__name__}, not a state dict of tensors '
                  '(a whole pickled model cannot be read safely: save model.state_dict() instead)')


def write(path: str, content: dict) -> None:
  """Saves {name: NumPy array}, or {key: {name: array}} (BasicSR's layout), with torch.save.

  Written to a temporary file first and renamed, so that an interrupted write leaves no partial file.
  """
  torch = import_torch()

  def tensors(tree):
    return {k: tensors(v) if isinstance(v, dict) else torch.from_numpy(np.ascontiguousarray(v))
            for k, v in tree.items()}

  partial = f'{path}.partial'
  torch.save(tensors(content), partial)
  os.replace(partial, path)
