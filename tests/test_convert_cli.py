"""python -m pfca_jax.convert on real runs: to_torch of a CIFAR ResNet-20 and of an MSRResNet x2 that kept a
moving average, loaded into the tests' own PyTorch definitions (tests/torch_definitions.py, independent of
the converter's copy); from_torch of the exported file, then predict on the folder; and every mistake
refused with one `error:` line, exit status 2 and nothing written.

The commands run as forks of one pre-imported process (tests/fork_server.py), as in test_bad_inputs.py.
Skipped without PyTorch, which reading and writing .pth files needs.
"""

import json
import os
import shlex

import jax
import numpy as np
import pytest
import skimage.data
from conftest import REPO, assert_trees_equal, checkpointed_state, load_repo_module, xla_flags
from fork_server import Server
import tiny_sr
from PIL import Image

torch = pytest.importorskip('torch', reason='PyTorch is not installed: pfca_jax.convert reads and writes .pth files '
                            'with it (pip install torch)')

import torch_definitions as td  # noqa: E402 -- imports torch, so only after the skip above.

from pfca_jax import train  # noqa: E402
from pfca_jax.convert import flax_to_torch, torch_to_flax  # noqa: E402
from pfca_jax.tasks.tiling import to_uint8  # noqa: E402
from pfca_jax.train import config_defaults  # noqa: E402
from pfca_jax.models.from_config import create_model  # noqa: E402

SR = dict(scale=2, num_feat=8, num_block=1)


# ---------------------------------------------------------------------------------------------------
# Two tiny runs that kept a moving average, and the server that runs the commands.


@pytest.fixture(scope='module')
def cls_run(tmp_path_factory):
  """CIFAR ResNet-20 on the offline digits, 1 step at a full learning rate (no warm-up), ema_decay 0.5."""
  config = load_repo_module('configs/quickstart.py').get_config('none')
  config.update(dict(data_dir=str(tmp_path_factory.mktemp('digits')), batch_size=8, num_train_steps=1,
                     warmup_epochs=0.0, log_every_steps=1, eval_every_steps=1, checkpoint_every_steps=1,
                     compare_attentions='', ema_decay=0.5))
  workdir = str(tmp_path_factory.mktemp('cls') / 'run')
  train.train_and_evaluate(config, workdir)
  return workdir


@pytest.fixture(scope='module')
def sr_run(tmp_path_factory):
  """MSRResNet x2 (8 features, 1 block) + PFCA on a fake DIV2K, 2 Adam steps at 1e-2, ema_decay 0.5."""
  config = tiny_sr.config(tiny_sr.write_data(str(tmp_path_factory.mktemp('tfds'))), attention='pfca')
  workdir = str(tmp_path_factory.mktemp('sr') / 'run')
  train.train_and_evaluate(config, workdir)
  return workdir


@pytest.fixture(scope='module')
def base(tmp_path_factory):
  return str(tmp_path_factory.mktemp('convert_cli'))


@pytest.fixture(scope='module')
def server(base):
  env = dict(os.environ, PFCA_JAX_CPU_SETTINGS='0', JAX_PLATFORMS='cpu',
             XLA_FLAGS=xla_flags(8),
             PYTHONPATH=os.pathsep.join(filter(None, [REPO, os.environ.get('PYTHONPATH')])))
  served = Server(env, os.path.join(base, 'server.log'))
  yield served
  served.close()


def run(server, base, name, module, args):
  """(status, stdout, stderr) of `python -m module args` run in a folder of its own, BASE/NAME/cwd."""
  cwd = os.path.join(base, name, 'cwd')
  os.makedirs(cwd)
  return server.run(module, shlex.split(args), cwd, os.path.join(base, name, 'log'))


def convert(server, base, name, args):
  status, out, err = run(server, base, name, 'pfca_jax.convert', args)
  assert status == 0, f'status {status}:\n{err[-3000:]}'
  return out


def load_pth(path):
  return torch.load(path, map_location='cpu', weights_only=True)


def numpy(state):
  return {name: value.numpy() for name, value in state.items()}


def assert_same(a: dict, b: dict):
  assert list(a) == list(b)
  for name in a:
    np.testing.assert_array_equal(np.asarray(a[name]), np.asarray(b[name]), err_msg=name)


# ---------------------------------------------------------------------------------------------------
# to_torch.


@pytest.fixture(scope='module')
def cls_pth(server, base, cls_run):
  path = os.path.join(base, 'resnet20.pth')
  out = convert(server, base, 'to_torch_cls', f'to_torch --workdir={cls_run} --out={path}')
  assert out.strip() == f'{path}: cifar_resnet20 + none, moving-average weights of step 1 (a bare state dict)'
  return path


def test_a_resnet_exports_its_average_as_a_state_dict_the_reference_loads_strictly(cls_pth, cls_run):
  state = load_pth(cls_pth)
  assert all(isinstance(value, torch.Tensor) for value in state.values())  # A bare state dict.
  reference = td.cifar_resnet('cifar_resnet20', num_classes=10)
  assert list(state) == list(reference.state_dict())  # The reference's names, in its order.
  reference.load_state_dict(state, strict=True)
  reference.eval()

  stored = checkpointed_state(cls_run)
  average = stored['ema']
  trained = {'params': stored['params'], 'batch_stats': stored['batch_stats']}
  assert not np.array_equal(average['params']['fc']['kernel'], trained['params']['fc']['kernel'])
  # The exported numbers are the average's, exactly: back through torch_to_flax, and forward through flax_to_torch.
  assert_trees_equal(torch_to_flax(state, 'cifar_resnet20', num_classes=10), average)
  assert_same(numpy({k: v for k, v in state.items() if not k.endswith('num_batches_tracked')}),
              {k: v for k, v in flax_to_torch(average, 'cifar_resnet20', num_classes=10).items()
               if not k.endswith('num_batches_tracked')})

  x = np.random.default_rng(0).normal(size=(4, 16, 16, 3)).astype(np.float32)
  model = create_model(load_repo_module('configs/quickstart.py').get_config('none'), num_classes=10)
  ours = np.asarray(jax.jit(model.apply, static_argnames='train')(average, x, train=False))
  with torch.no_grad():
    theirs = reference(torch.from_numpy(x.transpose(0, 3, 1, 2))).numpy()
  assert ours.shape == theirs.shape == (4, 10)
  assert np.max(np.abs(ours - theirs)) <= 1e-4 * np.max(np.abs(theirs))


@pytest.fixture(scope='module')
def sr_pth(server, base, sr_run):
  path = os.path.join(base, 'msrresnet_x2.pth')
  out = convert(server, base, 'to_torch_sr', f'to_torch --workdir={sr_run} --out={path}')
  assert out.strip() == (f'{path}: msrresnet + pfca, moving-average weights of step 2 (BasicSR layout: params, '
                         'params_ema)')
  return path


def test_an_msrresnet_exports_basicsr_layout_with_its_average_as_params_ema(sr_pth, sr_run):
  content = load_pth(sr_pth)
  assert list(content) == ['params', 'params_ema']
  stored = checkpointed_state(sr_run)
  assert_same(numpy(content['params_ema']), flax_to_torch({'params': stored['ema']['params']}, 'msrresnet', **SR))
  assert_same(numpy(content['params']), flax_to_torch({'params': stored['params']}, 'msrresnet', **SR))
  assert not np.array_equal(content['params']['conv_first.weight'], content['params_ema']['conv_first.weight'])
  for key in content:  # BasicSR's MSRResNet (its attention has no parameters) loads both.
    td.MSRResNet(num_feat=8, num_block=1, upscale=2).load_state_dict(content[key], strict=True)


# ---------------------------------------------------------------------------------------------------
# from_torch, then predict.


@pytest.fixture(scope='module')
def photo(base):
  path = os.path.join(base, 'photo.png')
  Image.fromarray(skimage.data.astronaut()[100:124, 180:212]).save(path)
  return path


def expected_upscale(params, attention, image_path):
  config = config_defaults.super_resolution(scale=2)
  config.model.update(num_feat=8, num_block=1, attention=attention)
  lr = np.asarray(Image.open(image_path))
  return to_uint8(np.asarray(jax.jit(create_model(config, scale=2).apply)(
      {'params': params}, lr[None].astype(np.float32) / 255))[0])


def test_predict_on_the_run_itself_upscales_with_its_average_as_exported(server, base, sr_run, photo):
  output = os.path.join(base, 'run_x2.png')
  status, _, err = run(server, base, 'predict_run', 'pfca_jax.predict', f'upscale --workdir={sr_run} {photo} {output}')
  assert status == 0, err[-2000:]
  stored = checkpointed_state(sr_run)
  on_average = expected_upscale(stored['ema']['params'], 'pfca', photo)
  on_trained = expected_upscale(stored['params'], 'pfca', photo)
  assert np.mean(on_average != on_trained) > 0.1  # The two are told apart.
  assert np.max(np.abs(np.asarray(Image.open(output)).astype(int) - on_average)) <= 1


@pytest.fixture(scope='module')
def converted(server, base, sr_pth):
  folder = os.path.join(base, 'converted')
  out = convert(server, base, 'from_torch', f'from_torch --file={sr_pth} --model=msrresnet --out={folder}')
  assert out.startswith(f'{folder}: msrresnet + none, 4,531 parameters from {sr_pth} (params_ema)')
  return folder


def test_from_torch_writes_a_folder_of_the_files_average_with_the_size_read_from_the_file(converted, sr_pth,
                                                                                         sr_run):
  with open(os.path.join(converted, 'config.json')) as f:
    config = json.load(f)
  assert config['task'] == 'super_resolution' and config['scale'] == 2
  assert {k: config['model'][k] for k in ('name', 'attention', 'num_feat', 'num_block')} == \
      dict(name='msrresnet', attention='none', num_feat=8, num_block=1)
  assert config['converted_from']['file'] == sr_pth and config['converted_from']['key'] == 'params_ema'
  stored = checkpointed_state(converted)
  assert_trees_equal(stored['params'], checkpointed_state(sr_run)['ema']['params'])


def test_predict_upscales_with_a_folder_converted_with_the_default_config(server, base, converted, photo, sr_run):
  # The DIV2K recipe keeps a moving average; a converted folder holds one set of weights and says so.
  with open(os.path.join(converted, 'config.json')) as f:
    assert json.load(f)['ema_decay'] == 0.0
  output = os.path.join(base, 'default_x2.png')
  status, _, err = run(server, base, 'predict_default', 'pfca_jax.predict',
                       f'upscale --workdir={converted} {photo} {output}')
  assert status == 0, err[-2000:]
  expected = expected_upscale(checkpointed_state(sr_run)['ema']['params'], 'none', photo)
  assert np.max(np.abs(np.asarray(Image.open(output)).astype(int) - expected)) <= 1


def test_from_torch_with_pfca_inserted_predicts_with_the_files_weights(server, base, sr_pth, sr_run, photo):
  config_file = os.path.join(base, 'tiny_sr.py')  # The config the weights will be used with (no average).
  with open(config_file, 'w') as f:
    f.write('from pfca_jax.train import config_defaults\n\n\ndef get_config(arg=None):\n'
            '  config = config_defaults.super_resolution(scale=2)\n'
            '  config.model.num_feat, config.model.num_block = 8, 1\n'
            '  config.ema_decay = 0.0\n  return config\n')
  folder = os.path.join(base, 'converted_pfca')
  convert(server, base, 'from_torch_pfca',
          f'from_torch --file={sr_pth} --model=msrresnet --scale=2 --attention=pfca --config={config_file} '
          f'--out={folder}')
  with open(os.path.join(folder, 'config.json')) as f:
    assert json.load(f)['model']['attention'] == 'pfca'
  output = os.path.join(base, 'pfca_x2.png')
  status, _, err = run(server, base, 'predict_pfca', 'pfca_jax.predict', f'upscale --workdir={folder} {photo} {output}')
  assert status == 0, err[-2000:]
  result = np.asarray(Image.open(output))
  assert result.shape == (48, 64, 3)
  # The file's average with PFCA inserted, which is what the run itself computed.
  expected = expected_upscale(checkpointed_state(sr_run)['ema']['params'], 'pfca', photo)
  assert np.max(np.abs(result.astype(int) - expected)) <= 1


# ---------------------------------------------------------------------------------------------------
# Mistakes: one line, status 2, nothing written.


@pytest.fixture(scope='module')
def inputs(base, sr_pth):
  folder = os.path.join(base, 'inputs')
  os.makedirs(os.path.join(folder, 'not_a_run'))
  os.makedirs(os.path.join(folder, 'full'))
  with open(os.path.join(folder, 'full', 'kept.txt'), 'w') as f:
    f.write('already here\n')
  with open(os.path.join(folder, 'random.pth'), 'wb') as f:
    f.write(np.random.default_rng(0).bytes(4096))
  torch.save({'epoch': 3, 'best_psnr': 30.5}, os.path.join(folder, 'no_state.pth'))
  with open(os.path.join(folder, 'exists.pth'), 'w') as f:
    f.write('an earlier export\n')
  return dict(inputs=folder, sr_pth=sr_pth)


ERRORS = [
    ('file_missing', 'from_torch --file={inputs}/missing.pth --model=msrresnet --out={out}',
     '{inputs}/missing.pth does not exist'),
    ('not_a_checkpoint', 'from_torch --file={inputs}/random.pth --model=msrresnet --out={out}',
     '{inputs}/random.pth is not a PyTorch checkpoint that torch.load can read'),
    ('no_state_dict', 'from_torch --file={inputs}/no_state.pth --model=msrresnet --out={out}',
     "{inputs}/no_state.pth holds a dict without a state dict (its keys: 'epoch', 'best_psnr')"),
    ('wrong_model', 'from_torch --file={sr_pth} --model=cifar_resnet20 --out={out}',
     '{sr_pth} holds msrresnet (scale=2, num_feat=8, num_block=1, num_in_ch=3, num_out_ch=3) weights, not '
     'cifar_resnet20; give --model=msrresnet'),
    ('wrong_scale', 'from_torch --file={sr_pth} --model=msrresnet --scale=3 --out={out}',
     '{sr_pth} holds MSRResNet x2 weights, not x3; give --scale=2'),
    ('no_model', 'from_torch --file={sr_pth} --out={out}', 'the following arguments are required: --model'),
    ('from_torch_out_not_empty', 'from_torch --file={sr_pth} --model=msrresnet --out={inputs}/full',
     "--out='{inputs}/full' is a folder that is not empty"),
    ('to_torch_out_exists', 'to_torch --workdir={sr_run} --out={inputs}/exists.pth',
     "--out='{inputs}/exists.pth' exists; give a new file name"),
    ('to_torch_not_a_run', 'to_torch --workdir={inputs}/not_a_run --out={out}.pth',
     "workdir '{inputs}/not_a_run' has no config.json: not a training run"),
    ('to_torch_option_of_from_torch', 'to_torch --workdir={sr_run} --out={out}.pth --model=msrresnet',
     'unknown flag --model; the flags of python -m pfca_jax.convert to_torch are --workdir, --out'),
    ('removed_from_torch', '--from-torch {sr_pth} --model msrresnet --out {out}',
     '--from-torch is not a flag of python -m pfca_jax.convert any more: write `python -m pfca_jax.convert '
     'from_torch --file=FILE.pth'),
    ('removed_to_torch', 'to_torch --to-torch={sr_run} --out={out}.pth',
     '--to-torch is not a flag of python -m pfca_jax.convert any more: write `python -m pfca_jax.convert '
     'to_torch --workdir=RUN'),
]


def tree(root):
  found = {}
  for folder, dirs, files in os.walk(root):
    for name in dirs + files:
      stat = os.lstat(os.path.join(folder, name))
      found[os.path.relpath(os.path.join(folder, name), root)] = (stat.st_size, stat.st_mtime_ns)
  return found


@pytest.mark.parametrize('name, args, message', ERRORS, ids=[e[0] for e in ERRORS])
def test_a_mistake_is_one_line_with_status_2_and_nothing_written(name, args, message, server, base, inputs, sr_run):
  values = dict(inputs, sr_run=sr_run, out=os.path.join(base, 'errors', name, 'out'))
  before = tree(inputs['inputs']), tree(sr_run)
  status, out, err = run(server, os.path.join(base, 'errors'), name, 'pfca_jax.convert', args.format(**values))
  lines = err.splitlines()
  assert status == 2 and len(lines) == 1 and lines[0].startswith('error: '), f'status {status}, stderr:\n{err[-3000:]}'
  assert message.format(**values) in lines[0], lines[0]
  assert 'Traceback' not in out + err
  assert sorted(os.listdir(os.path.join(base, 'errors', name))) == ['cwd', 'log.stderr', 'log.stdout']
  assert os.listdir(os.path.join(base, 'errors', name, 'cwd')) == []
  assert (tree(inputs['inputs']), tree(sr_run)) == before
