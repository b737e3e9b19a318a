"""Bad input, one table: every case is refused by the real command in one line that names it.

Each case runs a command (`python -m pfca_jax.main`, `.predict`, `.plot`, `.convert`, `.bench`,
`.models.summary`) and must end with
status 2, exactly one line on stderr (`error: ...`, naming the bad value and what is accepted), no
traceback, and nothing written: no workdir or output created, every input folder unchanged. The trainer's
cases run twice, as a single run and through the comparison driver (`compare_attentions`, which the quick
starts use), since each path checks what it trains on its own.

Speed: a fresh interpreter spends seconds importing jax and TensorFlow, so the cases run as forks of
one pre-imported process (fork_server.py). `fresh` cases run in a new interpreter, so that start-up
noise (TensorFlow's C++ log lines) would be seen too. Accepted inputs (a palette
PNG, a 16-bit PNG, a 1x1 image) are checked at the end for what they become.
"""

import dataclasses
import json
import os
import shlex
import subprocess
import sys
import zlib

import numpy as np
import pytest
from conftest import xla_flags
from fork_server import Server

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = os.path.join(REPO, 'configs')
CASE_TIMEOUT_S = 60


# --- The cases ------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Case:
  """args: the command line after the module, with {placeholders} (the `paths` fixture; {wd}, {out}: a
  workdir and an output that do not exist, in the case's own folder {case}); named: what the one line must
  contain; fresh: run in a new interpreter."""
  id: str
  module: str
  args: str
  named: tuple[str, ...]
  fresh: bool = False
  path: str | None = None  # The trainer's path it takes: 'single' run or the 'compare' driver; None: not the trainer's.


# The trainer's two paths, as the last flag of its command line: one run of the config's attention, or the
# comparison driver (`config.compare_attentions`) that the quick starts use.
TRAINER_PATHS = {'single': '--config.compare_attentions=', 'compare': '--config.compare_attentions=none,pfca'}


def main_case(id, args, *named, config='{quick}', fresh=False, workdir='{wd}', paths=tuple(TRAINER_PATHS)):
  """One case per trainer path in `paths`; paths=(None,) for a case decided before a config is trained (the
  command line itself) or one that names its path in its own arguments."""
  config_arg = f'--config={config} ' if config else ''
  workdir_arg = f'--workdir={workdir} ' if workdir else ''
  return [Case(id if path is None else f'{id}[{path}]', 'pfca_jax.main',
               f'{config_arg}{workdir_arg}{args} {TRAINER_PATHS.get(path, "")}'.strip(), named, fresh, path)
          for path in paths]


def predict_case(id, args, *named, fresh=False):
  return Case(id, 'pfca_jax.predict', args, named, fresh)


CASES = [
    # Config fields: misspelt, wrong type (refused while the flags are parsed, before either path), out of range.
    main_case('unknown_field', '--config.batchsize=8', "'batchsize'", "did you mean 'batch_size'", paths=(None,)),
    main_case('unknown_nested_field', '--config.model.nme=x', "'model.nme'", "did you mean 'model.name'",
              paths=(None,)),
    main_case('wrong_type_int', '--config.batch_size=abc', '--config.batch_size=abc', 'takes an integer',
              paths=(None,)),
    main_case('wrong_type_bool', '--config.nesterov=maybe', '--config.nesterov=maybe', 'True or False', paths=(None,)),
    main_case('group_as_value', '--config.model=resnet50', '--config.model=resnet50', 'set one at a time',
              paths=(None,)),
    main_case('wrong_type_tuple', '--config.lr_boundaries_epochs=abc', "lr_boundaries_epochs=('abc',)",
              'increasing epoch numbers'),
    main_case('zero_batch', '--config.batch_size=0', 'batch_size=0', 'positive integer'),
    main_case('negative_batch', '--config.batch_size=-4', 'batch_size=-4', 'positive integer'),
    main_case('batch_not_divisible', '--config.batch_size=12', 'batch_size=12', 'device count 8', 'batch_size=8'),
    main_case('zero_steps', '--config.num_train_steps=0', 'num_train_steps=0', 'or -1 to train for num_epochs',
              config='{quick_sr}'),
    main_case('negative_steps', '--config.num_train_steps=-5', 'num_train_steps=-5', '> 0'),
    main_case('no_length', '--config.num_epochs=0', 'num_epochs=0.0', 'one of them must be > 0'),
    main_case('zero_learning_rate', '--config.base_learning_rate=0', 'base_learning_rate=0.0', '> 0'),
    main_case('negative_learning_rate', '--config.base_learning_rate=-0.1', 'base_learning_rate=-0.1', '> 0'),
    main_case('momentum_out_of_range', '--config.momentum=1.5', 'momentum=1.5', '[0, 1)'),
    main_case('profile_not_a_range', '--config.profile_steps=5', "profile_steps='5'", 'START:END', "'10:15'"),
    main_case('profile_outside_the_run', '--config.dataset=synthetic --config.num_train_steps=20 '
              '--config.profile_steps=10:30', "profile_steps='10:30'", 'outside the steps this session trains (0:20)',
              paths=('single',)),
    # Names: model, attention and its options, dataset, optimiser, schedule, scale.
    main_case('unknown_model', '--config.model.name=resnet9', "'resnet9'", 'valid: resnet18'),
    main_case('unknown_attention', '--config.model.attention=cbam', "'cbam'", 'valid: none, pfca, se, eca, simam',
              config='{cifar}'),
    main_case('unknown_attention_in_config_arg', '', "'cbam'", 'valid: none, pfca', config='{quick}:cbam',
              paths=(None,)),
    main_case('unknown_compared_attention', '--config.compare_attentions=none,cbam', 'cbam',
              'none, pfca, se, eca, simam', paths=(None,)),
    main_case('unknown_attention_option', '--config.model.attention_options=lamb=1', "['lamb']",
              "valid: ['lam', 'variance']", config='{cifar}:pfca'),
    main_case('bad_attention_option_value', '--config.model.attention_options=lam=-1', 'lam=-1', '> 0',
              config='{cifar}:pfca'),
    main_case('bad_attention_option_choice', '--config.model.attention_options=variance=sample', "'sample'",
              "'unbiased', 'biased'", config='{cifar}:pfca'),
    main_case('attention_option_not_key_value', '--config.model.attention_options=lam', "'lam'", 'key=value',
              config='{cifar}:pfca'),
    # A comparison's baseline drops the options, which are for the attentions compared with it: single only.
    main_case('options_for_no_attention', '--config.model.attention_options=lam=1e-3', "'none' takes no options",
              "['lam']", config='{cifar}', paths=('single',)),
    main_case('unknown_dataset', '--config.dataset=mnist', "'mnist'", 'cifar100, imagenet2012, sklearn_digits'),
    main_case('unknown_optimizer', '--config.optimizer=adamw', "'adamw'", 'valid: sgd, adam'),
    main_case('unknown_schedule', '--config.schedule=linear', "'linear'", 'valid: step, cosine'),
    main_case('optimizer_without_its_fields', '--config.optimizer=sgd', "optimizer='sgd' needs the fields momentum "
              'and nesterov', 'valid here: adam', config='{quick_sr}'),
    main_case('ema_decay_out_of_range', '--config.ema_decay=1.5', 'ema_decay=1.5', 'must be in [0, 1)'),
    main_case('init_from_missing', '--config.init_from={base}/no_weights', "init_from '{base}/no_weights' does not "
              'exist', 'a PyTorch .pth file'),
    main_case('init_from_not_weights', '--config.init_from={inputs}/empty', "init_from '{inputs}/empty' is a folder "
              'without config.json and checkpoints/'),
    main_case('schedule_without_its_fields', '--config.schedule=cosine_restarts', "'cosine_restarts'",
              'valid here: step, cosine, constant'),
    main_case('scale_outside_2_3_4', '--config.scale=5', 'scale=5', '(2, 3, 4)', config='{quick_sr}'),
    # The command line itself.
    main_case('unknown_flag', '--bogus=1', '--bogus', '--config, --workdir', paths=(None,)),
    main_case('stray_argument', 'stray', "'stray'", 'takes flags only', paths=(None,)),
    main_case('missing_config', '', '--config is required', 'configs/cifar100_resnet56.py', config='', paths=(None,)),
    main_case('config_file_missing', '', "'{base}/nope.py' does not exist", 'configs/cifar100_resnet56.py',
              config='{base}/nope.py', paths=(None,)),
    main_case('config_file_not_python', '', 'README.md', 'not a Python file', config=f'{CONFIGS}/README.md',
              paths=(None,)),
    main_case('missing_workdir', '', '--workdir is required', 'the folder for checkpoints', workdir=''),
    main_case('url_workdir', '', "'gs://b/run' is a URL", 'local or mounted folder', workdir='gs://b/run'),
    main_case('workdir_under_a_file', '', '{inputs}/a_file/run', 'which is a file', workdir='{inputs}/a_file/run'),
    main_case('workdir_is_a_file', '', '{inputs}/a_file', 'is a file; give a folder', workdir='{inputs}/a_file'),
    # Data: prepared TFDS folders and super-resolution evaluation folders.
    main_case('data_dir_missing', '--config.data_dir={base}/no_data', "'{base}/no_data'", 'tfds build cifar100',
              config='{cifar}', fresh=True),
    main_case('data_dir_empty', '--config.data_dir={inputs}/empty', "'{inputs}/empty'", 'tfds build cifar100',
              config='{cifar}'),
    main_case('data_metadata_damaged', '--config.data_dir={inputs}/tfds_bad_info', 'is damaged', 'tfds build cifar100',
              config='{cifar}'),
    main_case('data_shard_missing', '--config.data_dir={inputs}/tfds_no_shard', 'are missing',
              'prepare it again', config='{cifar}'),
    main_case('data_shard_cut_short', '--config.data_dir={inputs}/tfds_short_shard', 'fewer than the',
              'prepare it again', config='{cifar}'),
    main_case('eval_folder_missing', '--config.eval_folders={base}/no_set', "'{base}/no_set'", 'is not a directory',
              config='{quick_sr}'),
    main_case('eval_folder_empty', '--config.eval_folders={inputs}/empty', "'{inputs}/empty' has no images",
              '.png/.jpg', config='{quick_sr}'),
    main_case('eval_folder_lr_missing', "'--config.eval_folders={inputs}/set/HR|{inputs}/set/LR_partial'",
              "'b'", 'named b.* or bx2.*', config='{quick_sr}'),
    main_case('eval_folder_lr_wrong_size', "'--config.eval_folders={inputs}/set/HR|{inputs}/set/LR_wrong'",
              'is 10x10', 'must be exactly 16x12 at scale 2', config='{quick_sr}'),
    main_case('eval_folder_not_an_image', '--config.eval_folders={inputs}/set_text', 'not an image file', 'PNG, JPEG',
              config='{quick_sr}'),
    # pfca_jax.predict: its arguments, its workdir, and image files.
    predict_case('predict_no_command', '', 'required: COMMAND', '--help'),
    predict_case('predict_unknown_command', 'segment', "'segment'", "'classify', 'upscale'"),
    predict_case('predict_no_workdir', 'upscale {ok_png} {out}', '--workdir', 'required'),
    predict_case('predict_top_zero', 'classify --workdir={run} --top=0 {ok_png}', '--top=0', 'at least 1'),
    predict_case('predict_bad_output_format', 'upscale --workdir={run} {ok_png} {case}/o.gif', "'.gif'",
                 'supported: .png, .jpg'),
    predict_case('predict_workdir_missing', 'upscale --workdir={base}/no_run {ok_png} {out}', "'{base}/no_run'",
                 'does not exist'),
    predict_case('predict_workdir_not_a_run', 'upscale --workdir={inputs}/empty {ok_png} {out}', 'no config.json',
                 'not a training run'),
    predict_case('predict_config_json_incomplete', 'upscale --workdir={inputs}/run_incomplete {ok_png} {out}',
                 "no field 'attention'", 'the whole config'),
    predict_case('image_missing', 'upscale --workdir={run} {base}/none.png {out}', "'{base}/none.png'",
                 'does not exist'),
    predict_case('image_is_a_folder', 'upscale --workdir={run} {inputs}/empty {out}', "'{inputs}/empty'",
                 'not an image file'),
    predict_case('image_empty_file', 'upscale --workdir={run} {images}/empty.png {out}', 'empty.png',
                 'empty file (0 bytes)', fresh=True),
    predict_case('image_truncated_png', 'upscale --workdir={run} {images}/truncated.png {out}', 'truncated.png',
                 'give a whole image file'),
    predict_case('image_truncated_jpeg', 'upscale --workdir={run} {images}/truncated.jpg {out}', 'truncated.jpg',
                 'give a whole image file'),
    predict_case('image_text_named_png', 'classify --workdir={run} {images}/text.png', 'text.png', 'none of PNG, JPEG'),
    predict_case('image_above_the_limit', 'upscale --workdir={run} {images}/huge.png {out}',
                 'huge.png', '9000x9000', 'the limit is 67,108,864 pixels (8192 x 8192)'),
    predict_case('image_far_above_the_limit', 'upscale --workdir={run} {images}/giant.png {out}',
                 'giant.png', 'the limit is 67,108,864 pixels (8192 x 8192)'),
    predict_case('predict_unknown_flag', 'upscale --workdir={run} --tiles=8 {ok_png} {out}', 'unknown flag --tiles',
                 'the flags of python -m pfca_jax.predict upscale are --workdir, --tile, --overlap'),
    predict_case('predict_bad_value', 'classify --workdir={run} --top=many {ok_png}', '--top', "'many'"),
    # pfca_jax.plot.
    Case('plot_no_workdir', 'pfca_jax.plot', '', ('--workdirs is required',)),
    Case('plot_workdir_missing', 'pfca_jax.plot', '--workdirs={base}/no_run', ("'{base}/no_run'", 'does not exist')),
    Case('plot_bad_smooth', 'pfca_jax.plot', '--workdirs={run} --smooth=0', ('--smooth=0', '>= 1')),
    Case('plot_bad_value', 'pfca_jax.plot', '--workdirs={run} --smooth=few', ('--smooth', "'few'")),
    Case('plot_positional_run', 'pfca_jax.plot', '{run}', ("unexpected argument '{run}'", '--workdirs=WORKDIR')),
    Case('plot_unknown_flag', 'pfca_jax.plot', '--workdir={run}',
         ('unknown flag --workdir;', '--workdirs, --out, --metric, --smooth')),
    # pfca_jax.convert: its subcommands, and the flags they replace.
    Case('convert_no_command', 'pfca_jax.convert', '', ('required: COMMAND',)),
    Case('convert_removed_from_torch', 'pfca_jax.convert', '--from-torch {ok_png} --model msrresnet --out {case}/o',
         ('--from-torch is not a flag', 'from_torch --file=FILE.pth --model=NAME --out=DIR')),
    Case('convert_removed_to_torch', 'pfca_jax.convert', '--to-torch={run} --out={case}/w.pth',
         ('--to-torch is not a flag', 'to_torch --workdir=RUN --out=FILE.pth')),
    Case('convert_unknown_flag', 'pfca_jax.convert', 'to_torch --workdir={run} --out={case}/w.pth --model=msrresnet',
         ('unknown flag --model', 'the flags of python -m pfca_jax.convert to_torch are --workdir, --out')),
    Case('convert_bad_value', 'pfca_jax.convert', 'from_torch --file={ok_png} --model=msrresnet --scale=two '
         '--out={case}/o', ('--scale', "'two'")),
    # experiments/ablation.py: its own flags, and the config fields the grid sets itself.
    *[Case(f'ablation_{id}', 'experiments/ablation.py',
           f'--config={{quick}} --workdir={{wd}} --results_dir={{case}}/results {args}', named)
      for id, args, named in [
          ('bad_attention', '--attentions=pfca,cbam', ("--attentions='pfca,cbam': cbam is not valid",)),
          ('no_seeds', '--seeds=0', ('--seeds=0 must be at least 1',)),
          ('unknown_field', '--config.no_such_field=1', ("unknown config field 'no_such_field'",)),
          ('attention_set_in_config', '--config.model.attention=se',
           ('--config.model.attention has no effect here: the grid trains the attentions of '
            '--attentions=none,pfca,se,eca,simam',)),
          ('unknown_flag', '--attention=se', ('unknown flag --attention', '--config, --seeds, --attentions, --workdir')),
      ]],
    # pfca_jax.bench and pfca_jax.models.summary: refused before anything compiles.
    Case('bench_unknown_flag', 'pfca_jax.bench', '--bogus=1', ('unknown flag --bogus', '--benchmarks, --attentions')),
    Case('bench_removed_attention', 'pfca_jax.bench', '--attention=pfca',
         ('--attention is not a flag', '--attentions=')),
    Case('bench_bad_value', 'pfca_jax.bench', '--rounds=x', ('--rounds', "'x'")),
    Case('bench_bad_name', 'pfca_jax.bench', '--attentions=cbam', ("'cbam'", 'valid: none, pfca')),
    Case('summary_unknown_flag', 'pfca_jax.models.summary', '--model=resnet50 --input=9',
         ('unknown flag --input', '--model, --attentions, --input_size')),
    Case('summary_removed_attention', 'pfca_jax.models.summary', '--model=resnet50 --attention=pfca',
         ('--attention is not a flag', '--attentions=')),
    Case('summary_bad_value', 'pfca_jax.models.summary', '--model=resnet50 --batch_size=x', ('--batch_size', "'x'")),
]
CASES = [case for row in CASES for case in (row if isinstance(row, list) else [row])]


# --- Inputs ---------------------------------------------------------------------------------------

def _png_header(width: int, height: int) -> bytes:
  """An 8-bit RGB PNG of any size with no pixel data: enough for a reader of headers."""
  def chunk(kind: bytes, body: bytes) -> bytes:
    return len(body).to_bytes(4, 'big') + kind + body + zlib.crc32(kind + body).to_bytes(4, 'big')
  header = width.to_bytes(4, 'big') + height.to_bytes(4, 'big') + bytes([8, 2, 0, 0, 0])
  return b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', header) + chunk(b'IDAT', zlib.compress(b'')) + chunk(b'IEND', b'')


def _write(path, content: bytes | str) -> None:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, 'wb' if isinstance(content, bytes) else 'w') as f:
    f.write(content)


def _make_images(folder: str) -> None:
  from PIL import Image
  rng = np.random.default_rng(0)
  rgb = rng.integers(0, 256, size=(24, 32, 3), dtype=np.uint8)
  Image.fromarray(rgb).save(os.path.join(folder, 'ok.png'))
  Image.fromarray(rgb).save(os.path.join(folder, 'ok.jpg'), quality=90)
  for name in ('ok.png', 'ok.jpg'):
    with open(os.path.join(folder, name), 'rb') as f:
      content = f.read()
    _write(os.path.join(folder, name.replace('ok', 'truncated')), content[:len(content) // 2])
  _write(os.path.join(folder, 'empty.png'), b'')
  _write(os.path.join(folder, 'text.png'), 'not an image\n')
  # Headers only (the pixels are never decoded): above our limit, and above twice Pillow's own.
  _write(os.path.join(folder, 'huge.png'), _png_header(9000, 9000))
  _write(os.path.join(folder, 'giant.png'), _png_header(20000, 20000))
  # Accepted: converted to 8-bit RGB.
  Image.fromarray(rgb).quantize(16).save(os.path.join(folder, 'palette.png'))
  gray16 = rng.integers(0, 65536, size=(24, 32), dtype=np.uint16)
  Image.fromarray(gray16).save(os.path.join(folder, 'gray16.png'))
  Image.fromarray(rgb[:1, :1]).save(os.path.join(folder, 'one_pixel.png'))


def _make_sr_sets(inputs: str) -> None:
  """A set of two HR images at scale 2, with a folder lacking one LR image and one whose LR image is off."""
  from PIL import Image
  rng = np.random.default_rng(1)
  for folder in ('set/HR', 'set/LR_partial', 'set/LR_wrong'):
    os.makedirs(os.path.join(inputs, folder))
  for name in ('a', 'b'):
    Image.fromarray(rng.integers(0, 256, size=(24, 32, 3), dtype=np.uint8)).save(f'{inputs}/set/HR/{name}.png')
  Image.fromarray(np.zeros((12, 16, 3), np.uint8)).save(f'{inputs}/set/LR_partial/a.png')
  Image.fromarray(np.zeros((12, 16, 3), np.uint8)).save(f'{inputs}/set/LR_wrong/ax2.png')
  Image.fromarray(np.zeros((10, 10, 3), np.uint8)).save(f'{inputs}/set/LR_wrong/bx2.png')
  _write(f'{inputs}/set_text/notes.png', 'not an image\n')


def _make_run(folder: str, complete: bool) -> None:
  """An SR workdir as predict finds it: config.json and a checkpoint folder (never read by refused cases)."""
  from pfca_jax.train import config_defaults, run_identity
  config = config_defaults.super_resolution(scale=2)
  record = run_identity.to_record(config)
  if not complete:
    del record['model']['attention']
  _write(os.path.join(folder, 'config.json'), json.dumps(record))
  os.makedirs(os.path.join(folder, 'checkpoints', '1'))


_FAKE_CIFAR = """
from pfca_jax.data import fake_data
fake_data.write_fake_dataset('cifar100', {folder!r}, {{
    'train': fake_data.fake_examples('cifar100', 8, num_classes=100),
    'test': fake_data.fake_examples('cifar100', 4, num_classes=100)}}, num_shards=2)
"""


def _damaged_copies(server, inputs: str, tmp: str) -> None:
  """A prepared cifar100 (made in a child of the server, which has TensorFlow), copied three times and damaged."""
  import shutil
  good = os.path.join(tmp, 'tfds_good')
  result = server.run_code(_FAKE_CIFAR.format(folder=good), cwd=tmp)
  assert result['rc'] == 0, result
  version_dir = os.path.join('cifar100', sorted(os.listdir(os.path.join(good, 'cifar100')))[0])
  for name in ('tfds_bad_info', 'tfds_no_shard', 'tfds_short_shard'):
    shutil.copytree(good, os.path.join(inputs, name))
  _write(os.path.join(inputs, 'tfds_bad_info', version_dir, 'dataset_info.json'), '{"name": "cifar100", ')
  os.remove(os.path.join(inputs, 'tfds_no_shard', version_dir, 'cifar100-train.tfrecord-00001-of-00002'))
  shard = os.path.join(inputs, 'tfds_short_shard', version_dir, 'cifar100-train.tfrecord-00000-of-00002')
  with open(shard, 'rb') as f:
    content = f.read()
  _write(shard, content[:len(content) // 2])


def _tree(root: str) -> dict:
  """Every file and folder under root with its size and modification time: what a case must not change."""
  found = {}
  for folder, dirs, files in os.walk(root):
    for name in dirs + files:
      path = os.path.join(folder, name)
      stat = os.lstat(path)
      found[os.path.relpath(path, root)] = (stat.st_size if name in files else -1, stat.st_mtime_ns)
  return found


@pytest.fixture(scope='module')
def env(tmp_path_factory):
  base = str(tmp_path_factory.mktemp('bad_inputs'))
  variables = dict(os.environ)
  variables.update(
      PFCA_JAX_CPU_SETTINGS='0',  # Would re-exec the forked server with its own arguments.
      JAX_PLATFORMS='cpu',
      # 8 devices, as the other tests have: a batch of 12 does not split over them.
      XLA_FLAGS=xla_flags(8),
      # A data_dir a case does not name is an empty folder of the inputs: preparing anything there is a write.
      TFDS_DATA_DIR=os.path.join(base, 'inputs', 'tfds_default'),
      PYTHONPATH=os.pathsep.join(filter(None, [REPO, os.environ.get('PYTHONPATH')])))
  return base, variables


@pytest.fixture(scope='module')
def server(env):
  served = Server(env[1], os.path.join(env[0], 'server.log'))
  yield served
  served.close()


@pytest.fixture(scope='module')
def paths(env, server):
  base, _ = env
  inputs, images = os.path.join(base, 'inputs'), os.path.join(base, 'inputs', 'images')
  for folder in (f'{inputs}/empty', f'{inputs}/tfds_default', images, f'{base}/cases', f'{base}/logs'):
    os.makedirs(folder)
  _write(os.path.join(inputs, 'a_file'), 'a file, not a folder\n')
  _make_images(images)
  _make_sr_sets(inputs)
  _make_run(os.path.join(inputs, 'run'), complete=True)
  _make_run(os.path.join(inputs, 'run_incomplete'), complete=False)
  _damaged_copies(server, inputs, base)
  return dict(base=base, inputs=inputs, images=images, run=os.path.join(inputs, 'run'),
              ok_png=os.path.join(images, 'ok.png'),
              quick=os.path.join(CONFIGS, 'quickstart.py'), quick_sr=os.path.join(CONFIGS, 'quickstart_sr.py'),
              cifar=os.path.join(CONFIGS, 'cifar100_resnet20.py'))


@pytest.mark.parametrize('case', CASES, ids=[c.id for c in CASES])
def test_refused_in_one_line_with_nothing_written(case, paths, server, env):
  # The case's own folder: the command runs in cwd/, and its workdir and outputs would land beside it.
  folder = os.path.join(paths['base'], 'cases', case.id)
  cwd = os.path.join(folder, 'cwd')
  os.makedirs(cwd)
  values = dict(paths, wd=os.path.join(folder, 'run'), out=os.path.join(folder, 'out.png'), case=folder)
  argv = [part.format(**values) for part in shlex.split(case.args)]
  before = _tree(paths['inputs'])
  if case.fresh:  # With the CPU settings of a real start, which may re-execute the command.
    fresh_env = {k: v for k, v in env[1].items() if k != 'PFCA_JAX_CPU_SETTINGS'}
    done = subprocess.run([sys.executable, '-m', case.module, *argv], cwd=cwd, env=fresh_env, capture_output=True,
                          text=True, timeout=CASE_TIMEOUT_S)
    rc, out, err = done.returncode, done.stdout, done.stderr
  else:
    rc, out, err = server.run(case.module, argv, cwd, os.path.join(paths['base'], 'logs', case.id))
  lines = err.splitlines()
  assert rc == 2 and len(lines) == 1 and lines[0].startswith('error: '), f'status {rc}, stderr:\n{err[-3000:]}'
  assert 'Traceback' not in err + out
  for text in case.named:
    assert text.format(**values) in lines[0], lines[0]
  assert os.listdir(folder) == ['cwd'] and os.listdir(cwd) == [], 'a workdir, output or file was written'
  assert _tree(paths['inputs']) == before, 'an input folder changed'  # Holds the workdirs that exist.


# --- --help: printed on stdout, status 0 -----------------------------------------------------------

HELP = [('pfca_jax.main', '', 'Command line: `python -m pfca_jax.main --config='),
        ('pfca_jax.predict', '', 'usage: python -m pfca_jax.predict'),
        ('pfca_jax.predict', 'upscale', 'usage: python -m pfca_jax.predict upscale'),
        ('pfca_jax.plot', '', 'usage: python -m pfca_jax.plot'),
        ('pfca_jax.convert', '', 'usage: python -m pfca_jax.convert'),
        ('pfca_jax.convert', 'to_torch', 'usage: python -m pfca_jax.convert to_torch [-h] --workdir=WORKDIR'),
        ('pfca_jax.bench', '', 'usage: python -m pfca_jax.bench'),
        ('pfca_jax.models.summary', '', 'usage: python -m pfca_jax.models.summary')]


@pytest.mark.parametrize('module, command, usage', HELP, ids=[f'{m}{"_" + c if c else ""}' for m, c, _ in HELP])
def test_help_is_printed_with_status_0(module, command, usage, paths, server):
  folder = os.path.join(paths['base'], 'help', f'{module}_{command}')
  os.makedirs(folder)
  rc, out, err = server.run(module, [command, '--help'] if command else ['--help'], folder,
                            os.path.join(paths['base'], 'logs', f'help_{module}_{command}'))
  assert rc == 0 and err == '' and out.lstrip().startswith(usage), f'status {rc}:\n{out[:500]}\n{err[-2000:]}'
  assert os.listdir(folder) == []


# --- Accepted inputs: what they become -------------------------------------------------------------

def test_a_one_pixel_image_is_upscaled(paths):
  import jax
  from pfca_jax import image_io, models
  from pfca_jax.tasks import tiling
  image = image_io.read_image(os.path.join(paths['images'], 'one_pixel.png'))
  assert image.rgb.shape == (1, 1, 3) and image.notes == []
  model = models.create('msrresnet', scale=2, num_feat=4, num_block=1, attention='pfca')
  variables = model.init(jax.random.key(0), np.zeros((1, 8, 8, 3), np.float32), train=False)
  upscale = tiling.Upscaler(model, tile=8, overlap=0).use(variables)
  sr = tiling.to_uint8(upscale(image.rgb.astype(np.float32) / 255.0))
  assert sr.shape == (2, 2, 3)

