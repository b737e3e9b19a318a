"""experiments/pfca_formulations.py: its formulations compute PFCA's function, and it runs and refuses bad input."""

import jax.numpy as jnp
import numpy as np
import pytest

from conftest import load_repo_module
from pfca_jax.models.fast import attention, batchnorm as fused

formulations = load_repo_module('experiments/pfca_formulations.py')


@pytest.mark.parametrize('variance', ('unbiased', 'biased'))
@pytest.mark.parametrize('name', sorted(formulations.FORMULATIONS))
def test_every_formulation_is_pfca(name, variance):
  # Moderate offsets (raw_moments is only claimed exact there), 2..512 channels.
  rng = np.random.default_rng(0)
  for c in (2, 7, 512):
    u = rng.normal(size=(4, c)) * rng.uniform(0.1, 3) + rng.normal()
    ddof = 1 if variance == 'unbiased' else 0
    d = (u - u.mean(-1, keepdims=True)) ** 2
    expected = 1 / (1 + np.exp(-(d / (4 * (u.var(-1, ddof=ddof, keepdims=True) + 1e-4)) + 0.5)))
    got = formulations.FORMULATIONS[name](jnp.asarray(u, jnp.float32), 1e-4, variance)
    np.testing.assert_allclose(got, expected, rtol=1e-5, err_msg=f'{name}, C={c}')


def test_swaps_are_undone():
  saved = attention.pfca_weights, fused.pfca_weights, fused._gains
  for fn in formulations.FORMULATIONS.values():
    with formulations._formulation(fn):
      assert attention.pfca_weights is fn
    assert (attention.pfca_weights, fused.pfca_weights, fused._gains) == saved


@pytest.mark.parametrize('argv,message', [
    (['--benchmark=resnet49'], "--benchmark='resnet49'"),
    (['--benchmark=resnet50,resnet18'], 'give one network'),
    (['--variants=pfca,cbam'], "--variants='pfca,cbam': cbam; valid: none, se, pfca"),
    (['--rounds=0'], '--batch_size, --rounds and --steps must be >= 1'),
])
def test_bad_arguments_are_one_line(argv, message, capsys):
  assert formulations.main(argv) == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and err[0].startswith('error: ') and message in err[0]
