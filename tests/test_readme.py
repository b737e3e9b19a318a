"""The Python examples of the README and the docs run as written: README.md's and docs/models.md's in this
process, one that calls cpu_settings.apply() as a script of its own, docs/pytorch.md's with the file and the
names its commands give a reader."""

import pathlib
import re
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
PAGES = ('README.md', 'docs/models.md')
BLOCKS = [(page, i, block) for page in PAGES
          for i, block in enumerate(re.findall(r'```python\n(.*?)```', (ROOT / page).read_text(), flags=re.S))]
# cpu_settings.apply() may restart the process it runs in, with the same arguments: such a block runs as a script.
SCRIPTS = [b for b in BLOCKS if 'cpu_settings.apply()' in b[2]]
BLOCKS = [b for b in BLOCKS if b not in SCRIPTS]


def test_pages_have_examples():
  assert {page for page, _, _ in BLOCKS} == set(PAGES) and SCRIPTS


@pytest.mark.parametrize('page,index,block', BLOCKS, ids=[f'{page}:{i}' for page, i, _ in BLOCKS])
def test_example_runs(page, index, block):
  # Each block stands alone, as a reader would paste it; its own asserts check it.
  exec(compile(block, f'{page} python block {index}', 'exec'), {'__name__': 'readme_example'})


@pytest.mark.parametrize('page,index,block', SCRIPTS, ids=[f'{page}:{i}' for page, i, _ in SCRIPTS])
def test_example_runs_as_a_script(page, index, block, tmp_path):
  script = tmp_path / 'example.py'
  script.write_text(block)
  done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=120)
  assert done.returncode == 0 and 'Traceback' not in done.stderr, done.stderr[-2000:]


# --- docs/pytorch.md: its blocks use a file and names the page's commands give them -------------------

def _pytorch_blocks():
  return re.findall(r'```python\n(.*?)```', (ROOT / 'docs' / 'pytorch.md').read_text(), flags=re.S)


def test_pytorch_page_hooks_give_our_logits_and_its_python_api_round_trips(tmp_path, monkeypatch):
  """The page's two blocks as a reader runs them: `r50_pfca.pth` as `convert to_torch` writes it (a bare state
  dict of a ResNet-50 + PFCA with BN scales and statistics away from their initial values, so that every PFCA
  changes the output), then `state_dict` and `images_nhwc` for the second block. The hooked torchvision model
  must give our logits: the hook's formula and its place are PFCA's."""
  torch = pytest.importorskip('torch', reason='PyTorch is not installed (pip install -r requirements-torch.txt)')
  pytest.importorskip('torchvision', reason='torchvision is not installed')
  import jax
  import numpy as np
  from flax import traverse_util
  from pfca_jax import convert, models

  hooks, api = _pytorch_blocks()
  images = np.random.default_rng(0).normal(size=(2, 64, 64, 3)).astype(np.float32)
  ours = models.create('resnet50', attention='pfca')
  # Random values in the shapes of ours.init's (initialising ResNet-50 outside jit costs a minute): He-scaled
  # kernels, BN scales and variances in [0.5, 1.5], biases and means in [-0.3, 0.3].
  rng = np.random.default_rng(1)
  flat = traverse_util.flatten_dict(jax.eval_shape(lambda: ours.init(jax.random.key(0), images[:1], train=False)))
  for path, leaf in flat.items():
    if path[-1] == 'kernel':
      values = rng.normal(0.0, np.sqrt(2.0 / np.prod(leaf.shape[:-1])), leaf.shape)
    elif path[-1] in ('scale', 'var'):
      values = rng.uniform(0.5, 1.5, leaf.shape)
    else:
      values = rng.uniform(-0.3, 0.3, leaf.shape)
    flat[path] = values.astype(np.float32)
  variables = traverse_util.unflatten_dict(flat)
  # Outside jit, as the page's second block runs it: that block then finds every operation compiled.
  expected = np.asarray(ours.apply(variables, images, train=False))
  state_dict = convert.flax_to_torch(variables, 'resnet50')
  monkeypatch.chdir(tmp_path)
  torch.save({k: torch.from_numpy(v) for k, v in state_dict.items()}, 'r50_pfca.pth')

  namespace = {'__name__': 'pytorch_md_example'}
  exec(compile(hooks, 'docs/pytorch.md python block 0', 'exec'), namespace)
  model = namespace['model'].eval()
  with torch.no_grad():
    hooked = model(torch.from_numpy(images.transpose(0, 3, 1, 2))).numpy()
    for module in model.modules():
      module._forward_hooks.clear()
    plain = model(torch.from_numpy(images.transpose(0, 3, 1, 2))).numpy()
  scale = np.abs(expected).max()
  assert np.abs(hooked - expected).max() <= 1e-4 * scale, np.abs(hooked - expected).max() / scale
  assert np.abs(plain - expected).max() > 0.1 * scale  # The hooks change the output: the check above is PFCA's.

  namespace = {'__name__': 'pytorch_md_example', 'state_dict': state_dict, 'images_nhwc': images}
  exec(compile(api, 'docs/pytorch.md python block 1', 'exec'), namespace)
  np.testing.assert_allclose(namespace['logits'], expected, rtol=1e-5, atol=1e-5 * scale)
  assert namespace['state_dict'].keys() == state_dict.keys()
  for key, value in state_dict.items():
    np.testing.assert_array_equal(namespace['state_dict'][key], value, err_msg=key)
