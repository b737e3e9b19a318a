"""pfca_jax.convert.torch_models, the PyTorch definitions offered to users (docs/pytorch.md), against the
tests' own (tests/torch_definitions.py, written from the references): the same state dict loads into both
with strict=True and gives the same outputs. The parity tests compare our JAX networks with the tests'
definitions only, so this is the one check of the users' copy. Skipped without PyTorch."""

import numpy as np
import pytest

torch = pytest.importorskip('torch', reason='PyTorch is not installed (pip install -r requirements-torch.txt)')
torchvision = pytest.importorskip('torchvision', reason='torchvision is not installed')

import torch_definitions as td  # noqa: E402 -- imports torch, so only after the skips above.

from pfca_jax.convert import torch_models as tm  # noqa: E402


def _attentions(attention):
  return {None: (None, None), 'pfca': (td.PFCA, tm.PFCA), 'simam': (td.SimAM, tm.SimAM)}[attention]


def _same(reference, copy, shape):
  x = torch.from_numpy(np.random.default_rng(0).normal(size=shape).astype(np.float32))
  reference = td.randomise(reference, calibration=x)
  copy.load_state_dict(reference.state_dict(), strict=True)
  assert list(copy.state_dict()) == list(reference.state_dict())  # Same names, in the same order.
  with torch.no_grad():
    want, got = reference(x).numpy(), copy.eval()(x).numpy()
  assert np.abs(got - want).max() <= 1e-5 * np.abs(want).max(), np.abs(got - want).max() / np.abs(want).max()


@pytest.mark.parametrize('name, attention', [('cifar_resnet20', None), ('cifar_resnet20', 'pfca'),
                                             ('cifar_resnet20', 'simam'), ('cifar_resnet164', 'pfca')])
def test_cifar_resnets(name, attention):
  ours, theirs = _attentions(attention)
  _same(td.cifar_resnet(name, num_classes=100, attention=ours), tm.cifar_resnet(name, 100, theirs), (2, 3, 16, 12))


@pytest.mark.parametrize('scale, attention', [(2, None), (3, 'pfca'), (4, 'pfca')])
def test_msrresnets(scale, attention):
  ours, theirs = _attentions(attention)
  _same(td.MSRResNet(num_feat=16, num_block=2, upscale=scale, attention=ours),
        tm.MSRResNet(num_feat=16, num_block=2, upscale=scale, attention=theirs), (2, 3, 12, 10))


@pytest.mark.parametrize('name', ['resnet18', 'resnet50'])
def test_insert_pfca_into_torchvision(name):
  reference, copy = (getattr(torchvision.models, name)(weights=None) for _ in range(2))
  td.insert_pfca(reference)
  tm.insert_pfca(copy)
  _same(reference, copy, (2, 3, 64, 48))
