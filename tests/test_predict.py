"""The prediction CLI on real runs: a CIFAR-100 classifier and an x2 MSRResNet, each trained for one step by
train_and_evaluate on tiny fake data, applied to real photos (skimage.data) in the formats people have."""

import glob
import io
import json
import os
import shutil
import subprocess
import sys

import jax
import ml_collections
import numpy as np
import pytest
import skimage.data
import tensorflow as tf
import tensorflow_datasets as tfds
from conftest import checkpointed_state
from PIL import Image

from pfca_jax import image_io, predict, run_folder, train
from pfca_jax.train import config_defaults
from pfca_jax.tasks import tiling
from pfca_jax.data import classification, fake_data, preprocessing
from pfca_jax.imresize import imresize
from pfca_jax.tasks.super_resolution import to_uint8
from pfca_jax.models.from_config import create_model

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope='module')
def cifar_images():
  # Label i is the i-th test image, so evaluation batches say which image each row is.
  return np.random.default_rng(1).integers(0, 256, size=(8, 32, 32, 3), dtype=np.uint8)


@pytest.fixture(scope='module')
def cls_run(tmp_path_factory, cifar_images):
  data_dir = str(tmp_path_factory.mktemp('tfds'))
  fake_data.write_fake_dataset('cifar100', data_dir, {
      'train': fake_data.fake_examples('cifar100', 8), 'test': list(zip(cifar_images, range(8)))}, num_shards=1)
  config = config_defaults.classification()
  config.update(dict(data_dir=data_dir, batch_size=8, eval_batch_size=8, num_train_steps=1, log_every_steps=1,
                     eval_every_steps=1, checkpoint_every_steps=1, shuffle_buffer_size=8))
  config.model.attention = 'pfca'
  workdir = str(tmp_path_factory.mktemp('cls_run'))
  train.train_and_evaluate(config, workdir)
  return workdir


@pytest.fixture(scope='module')
def sr_run(tmp_path_factory):
  data_dir = str(tmp_path_factory.mktemp('tfds'))
  hr = skimage.data.coffee()[100:132, 200:240]
  fake_data.write_fake_div2k(data_dir, 2, {'train': [(imresize(hr, 0.5), hr)] * 8,
                                           'validation': [(imresize(hr, 0.5), hr)]}, num_shards=1)
  config = config_defaults.super_resolution(scale=2)
  config.update(dict(data_dir=data_dir, batch_size=8, hr_patch_size=16, patches_per_image=1, num_train_steps=1,
                     log_every_steps=1, eval_every_steps=1, checkpoint_every_steps=1, shuffle_buffer_size=8,
                     eval_tile=12, eval_tile_overlap=2, eval_num_samples=0))
  config.model.update(num_feat=8, num_block=2, attention='pfca')
  workdir = str(tmp_path_factory.mktemp('sr_run'))
  train.train_and_evaluate(config, workdir)
  return workdir


@pytest.fixture(scope='module')
def files(tmp_path_factory):
  """Real photos saved in the formats and modes the reader converts, and a few bad files."""
  d = tmp_path_factory.mktemp('images')
  astronaut, camera = skimage.data.astronaut(), skimage.data.camera()
  rgb, gray = astronaut[:30, 200:240], camera[100:130, 200:240]
  alpha = np.tile(np.linspace(0, 255, 40).astype(np.uint8), (30, 1))
  noise = np.random.default_rng(0).integers(-128, 129, size=rgb.shape)
  rgb16 = np.clip(rgb.astype(np.int64) * 257 + noise, 0, 65535).astype(np.uint16)  # Not just 8-bit values x 257.
  gray16 = np.clip(gray.astype(np.int64) * 257 + 200, 0, 65535).astype(np.uint16)  # Mostly rounds up to gray + 1.
  paths = {name: str(d / name) for name in ('chelsea.png', 'rgb.png', 'gray.png', 'rgba.png', 'gray16.png',
                                              'rgb16.png', 'palette.png', 'bw.png', 'text.png', 'truncated.png')}
  Image.fromarray(skimage.data.chelsea()).save(paths['chelsea.png'])
  Image.fromarray(rgb).save(paths['rgb.png'])
  Image.fromarray(gray).save(paths['gray.png'])
  Image.fromarray(np.dstack([rgb, alpha])).save(paths['rgba.png'])
  Image.fromarray(gray16).save(paths['gray16.png'])
  with open(paths['rgb16.png'], 'wb') as f:
    f.write(tf.io.encode_png(rgb16).numpy())  # Pillow cannot write 16-bit colour.
  Image.fromarray(rgb).quantize(16).save(paths['palette.png'])
  Image.fromarray(gray).convert('1').save(paths['bw.png'])
  with open(paths['text.png'], 'w') as f:
    f.write('not an image\n')
  with open(paths['chelsea.png'], 'rb') as f, open(paths['truncated.png'], 'wb') as g:
    g.write(f.read()[:5000])
  return dict(paths, arrays={'rgb': rgb, 'gray': gray, 'alpha': alpha, 'rgb16': rgb16, 'gray16': gray16}, dir=str(d))


def run_cli(*args, code=None):
  command = ['-c', code, *args] if code else ['-m', 'pfca_jax.predict', *args]
  return subprocess.run([sys.executable, *command], capture_output=True, text=True, cwd=ROOT, timeout=300)


def read_config(workdir):
  with open(os.path.join(workdir, 'config.json')) as f:
    return ml_collections.ConfigDict(json.load(f))


def jitted(model, variables):
  forward = jax.jit(lambda v, x: model.apply(v, x, train=False))  # Variables as arguments, as predict.py does.
  return lambda x: np.asarray(forward(variables, x))


def restored(workdir):
  """The run's model and variables, read independently of predict.py and placed on one device: the moving
  average of the weights when the run kept one (config.ema_decay > 0, as the DIV2K configs do)."""
  config = read_config(workdir)
  state = checkpointed_state(workdir)
  weights = state['ema'] if config.get('ema_decay', 0.0) > 0 else state
  variables = jax.device_put({'params': weights['params'], 'batch_stats': weights['batch_stats']}, jax.devices()[0])
  extra = {'scale': config.scale} if config.task == 'super_resolution' else {'num_classes': 100}
  return config, create_model(config, **extra), variables


def printed_classes(stdout):
  """{image: [(name, probability), ...]} from classify's output."""
  result, current = {}, None
  for line in stdout.splitlines():
    if not line.startswith(' '):
      current = result.setdefault(line.rstrip(':'), [])
    else:
      _, p, name = line.split(maxsplit=2)
      current.append((name, float(p)))
  return result


# --- Reading images -------------------------------------------------------------------------------


def test_conversions_to_8bit_rgb_with_notes(files):
  a = files['arrays']
  cases = {  # file: (expected rgb, expected alpha, words of the note or None)
      'rgb.png': (a['rgb'], None, None),
      'gray.png': (np.dstack([a['gray']] * 3), None, 'is grayscale'),
      'rgba.png': (a['rgb'], a['alpha'], None),
      'gray16.png': (np.dstack([np.round(a['gray16'] / 257.0).astype(np.uint8)] * 3), None, 'is 16-bit grayscale'),
      'rgb16.png': (np.round(a['rgb16'] / 257.0).astype(np.uint8), None, 'is 16-bit RGB'),
      'palette.png': (np.asarray(Image.open(files['palette.png']).convert('RGB')), None, 'palette'),
      'bw.png': (np.dstack([np.where(np.asarray(Image.open(files['bw.png'])), 255, 0)] * 3), None, '1-bit'),
  }
  for name, (rgb, alpha, words) in cases.items():
    image = image_io.read_image(files[name])
    assert image.rgb.dtype == np.uint8 and image.rgb.shape == (30, 40, 3), name
    np.testing.assert_array_equal(image.rgb, rgb, err_msg=name)
    assert (image.alpha is None) == (alpha is None), name
    if alpha is not None:
      np.testing.assert_array_equal(image.alpha, alpha, err_msg=name)
    if words is None:
      assert image.notes == [], (name, image.notes)
    else:
      assert len(image.notes) == 1 and words in image.notes[0] and files[name] in image.notes[0], image.notes
  assert abs(np.round(a['rgb16'] / 257.0) - a['rgb16'] // 256).max() == 1  # Pillow's high byte would be off.


def test_exif_orientation_is_applied(files, tmp_path):
  exif = Image.Exif()
  exif[0x0112] = 6  # Stored turned left: shown turned 90 degrees clockwise.
  Image.fromarray(files['arrays']['rgb']).save(tmp_path / 'turned.png', exif=exif)
  image = image_io.read_image(str(tmp_path / 'turned.png'))
  np.testing.assert_array_equal(image.rgb, np.rot90(files['arrays']['rgb'], -1))
  assert image.notes == [f'{tmp_path / "turned.png"} is turned upright as its EXIF orientation (6) says']


def test_16bit_rgb_tiff_and_output_formats(files, tmp_path):
  import tifffile
  path = str(tmp_path / 'rgb16.tif')
  tifffile.imwrite(path, files['arrays']['rgb16'])
  image = image_io.read_image(path)
  np.testing.assert_array_equal(image.rgb, np.round(files['arrays']['rgb16'] / 257.0).astype(np.uint8))
  rgb, alpha = files['arrays']['rgb'], files['arrays']['alpha']
  for name, mode in [('a.png', 'RGBA'), ('a.tif', 'RGBA'), ('a.webp', 'RGBA'), ('a.jpg', 'RGB'), ('a.bmp', 'RGB')]:
    image_io.write_image(str(tmp_path / name), rgb, alpha)
    written = Image.open(str(tmp_path / name))
    assert written.mode == mode and written.size == (40, 30), name
    if name != 'a.jpg':
      np.testing.assert_array_equal(np.asarray(written)[..., :3], rgb, err_msg=name)  # Lossless formats.
  assert sorted(os.listdir(tmp_path)) == ['a.bmp', 'a.jpg', 'a.png', 'a.tif', 'a.webp', 'rgb16.tif']  # No leftovers.


# --- classify -------------------------------------------------------------------------------------


def test_classify_cli_matches_the_model(cls_run, files):
  result = run_cli('classify', f'--workdir={cls_run}', files['chelsea.png'], files['rgb16.png'])
  assert result.returncode == 0, result.stderr
  notes = result.stderr.splitlines()
  assert all(line.startswith('note: ') for line in notes), notes
  assert any('chelsea.png is 451x300; cifar100 takes 32x32 images only' in line for line in notes), notes
  assert any('rgb16.png is 16-bit RGB' in line for line in notes), notes
  classes = printed_classes(result.stdout)
  assert list(classes) == [files['chelsea.png'], files['rgb16.png']]
  config, model, variables = restored(cls_run)
  spec = classification.get_spec('cifar100')
  # The prepared metadata's names: '0'..'99' for the fake data, 'apple', ... for the real one.
  tfds_names = tfds.builder('cifar100', data_dir=config.data_dir).info.features['label'].names
  for path, top in classes.items():
    probabilities = [p for _, p in top]
    assert len(top) == 5 and probabilities == sorted(probabilities, reverse=True) and sum(probabilities) <= 1
    # The same input built by hand: bicubic to 32x32, then the evaluation pipeline's own functions.
    rgb = image_io.read_image(path).rgb
    small = np.asarray(Image.fromarray(rgb).resize((32, 32), Image.Resampling.BICUBIC))
    x = preprocessing.normalize(spec.eval_preprocess(tf.constant(image_io.encode_png(small)), config),
                                spec.mean, spec.std).numpy()
    direct = np.asarray(jax.nn.softmax(model.apply(variables, x[None], train=False)[0]))
    np.testing.assert_allclose(probabilities, direct[[tfds_names.index(name) for name, _ in top]], atol=5e-5)
    np.testing.assert_allclose(probabilities, np.sort(direct)[::-1][:5], atol=5e-5)  # Tie-proof: the top 5.


def test_preprocessing_is_evaluations(cls_run, cifar_images):
  """On images of the training size, predict.preprocess gives exactly what evaluation fed the model."""
  config = read_config(cls_run)
  batch = next(classification.eval_dataset(config)[0].as_numpy_iterator())
  spec = classification.get_spec('cifar100')
  for image, label in zip(batch['image'], batch['label']):
    np.testing.assert_array_equal(predict.preprocess(cifar_images[label], config, spec), image)


def test_classify_without_the_dataset_converts_and_names_classes(cls_run, files, tmp_path, capsys):
  workdir = str(tmp_path / 'moved_run')
  shutil.copytree(cls_run, workdir)
  with open(os.path.join(workdir, 'config.json')) as f:
    content = json.load(f)
  content['data_dir'] = str(tmp_path / 'no_data_here')
  with open(os.path.join(workdir, 'config.json'), 'w') as f:
    json.dump(content, f)
  assert predict.main(['classify', f'--workdir={workdir}', '--top=3', files['gray.png'], files['rgba.png']]) == 0
  out, err = capsys.readouterr()
  classes = printed_classes(out)
  assert [len(top) for top in classes.values()] == [3, 3]
  assert all(name.startswith('class ') for top in classes.values() for name, _ in top)
  assert 'gray.png is grayscale; converted to 8-bit RGB' in err
  assert 'rgba.png has an alpha channel; it is ignored' in err
  assert not os.path.exists(tmp_path / 'no_data_here')


# --- upscale --------------------------------------------------------------------------------------


def test_upscale_cli_equals_the_whole_image_forward_pass(sr_run, files, tmp_path):
  out = str(tmp_path / 'x2.png')
  result = run_cli('upscale', f'--workdir={sr_run}', files['rgb.png'], out)
  assert result.returncode == 0, result.stderr
  assert result.stdout.strip() == f'{out}: 80x60 (x2 of 40x30)'
  config, model, variables = restored(sr_run)
  lr = files['arrays']['rgb'].astype(np.float32) / 255
  whole = jitted(model, variables)(lr[None])[0]  # The run's tile is 12: the CLI's output is tiled.
  written = np.asarray(Image.open(out))
  assert written.shape == (60, 80, 3)
  # Equal up to float rounding, which can move a value across a rounding boundary of the 8-bit image.
  difference = np.abs(written.astype(int) - to_uint8(whole).astype(int))
  assert difference.max() <= 1 and np.mean(difference) < 1e-3


def test_tile_progress_bar(sr_run, files):
  config, model, variables = restored(sr_run)
  stream = io.StringIO()
  progress = predict.TileProgress('upscale x2', stream=stream, bar=True)
  upscaler = tiling.Upscaler(model, tile=12, overlap=2).use(variables)
  predict.upscale_image(upscaler, files['arrays']['rgb'], progress=progress)
  progress.close()
  # 30x40 with the tail's overlap of 2 (step 8): 4 x 5 tiles.
  assert 'upscale x2: 100%' in stream.getvalue() and '20/20' in stream.getvalue()


def test_upscale_smaller_than_a_tile_is_the_whole_image_output(sr_run, files, tmp_path, capsys):
  out = str(tmp_path / 'x2.png')
  assert predict.main(['upscale', f'--workdir={sr_run}', files['rgb.png'], out, '--tile=48', '--overlap=8']) == 0
  config, model, variables = restored(sr_run)
  whole = jitted(model, variables)(files['arrays']['rgb'][None].astype(np.float32) / 255)[0]
  np.testing.assert_array_equal(np.asarray(Image.open(out)), to_uint8(whole))
  np.testing.assert_array_equal(tiling.to_uint8(whole, rows=7),
                                np.clip(np.round(np.asarray(whole, np.float64) * 255), 0, 255).astype(np.uint8))


def test_upscale_alpha_grayscale_and_16bit(sr_run, files, tmp_path, capsys):
  rgba_out, jpg_out = str(tmp_path / 'rgba_x2.png'), str(tmp_path / 'rgba_x2.jpg')
  rgb_out = str(tmp_path / 'rgb_x2.png')
  for args in [(files['rgba.png'], rgba_out), (files['rgba.png'], jpg_out), (files['rgb.png'], rgb_out),
               (files['gray.png'], str(tmp_path / 'gray_x2.png'))]:
    assert predict.main(['upscale', f'--workdir={sr_run}', *args]) == 0
  err = capsys.readouterr().err
  assert 'rgba.png has an alpha channel; the RGB goes through the model, the alpha is upscaled bicubically' in err
  assert 'rgba.png has an alpha channel, which .jpg files cannot store; dropped' in err
  assert 'gray.png is grayscale; converted to 8-bit RGB' in err
  rgba = np.asarray(Image.open(rgba_out))
  assert rgba.shape == (60, 80, 4) and Image.open(jpg_out).mode == 'RGB'
  np.testing.assert_array_equal(rgba[..., :3], np.asarray(Image.open(rgb_out)))
  np.testing.assert_array_equal(rgba[..., 3], imresize(files['arrays']['alpha'][..., None], 2)[..., 0])
  assert np.asarray(Image.open(tmp_path / 'gray_x2.png')).shape == (60, 80, 3)

  # 16-bit grayscale through the command line; nothing on that path imports TensorFlow.
  code = ('import sys; from pfca_jax import predict; code = predict.main(sys.argv[1:]); '
          'assert "tensorflow" not in sys.modules, "TensorFlow imported"; sys.exit(code)')
  out = str(tmp_path / 'gray16_x2.png')
  result = run_cli('upscale', f'--workdir={sr_run}', files['gray16.png'], out, code=code)
  assert result.returncode == 0, result.stderr
  assert f'note: {files["gray16.png"]} is 16-bit grayscale; converted to 8-bit RGB' in result.stderr.splitlines()
  assert Image.open(out).size == (80, 60)


# --- Mistakes: one line, status 2, before the model is loaded --------------------------------------


@pytest.fixture(scope='module')
def bad_workdirs(tmp_path_factory, sr_run):
  d = tmp_path_factory.mktemp('bad')
  (d / 'no_config').mkdir()
  (d / 'no_checkpoint').mkdir()
  (d / 'comparison' / 'pfca').mkdir(parents=True)  # config.compare_attentions: one run per attention.
  shutil.copy(os.path.join(sr_run, 'config.json'), d / 'comparison' / 'pfca')
  shutil.copy(os.path.join(sr_run, 'config.json'), d / 'no_checkpoint')
  shutil.copytree(sr_run, d / 'other_model')
  with open(d / 'other_model' / 'config.json') as f:
    content = json.load(f)
  content['model']['num_feat'] = 16  # The checkpoint holds 8 features.
  with open(d / 'other_model' / 'config.json', 'w') as f:
    json.dump(content, f)
  return str(d)


ERRORS = [  # (argv with {placeholders}, what the line must name)
    ('classify --workdir={cls} {dir}/missing.png', 'missing.png'),
    ('classify --workdir={cls} {text}', 'text.png'),
    ('classify --workdir={cls} {dir}', 'is a folder'),
    ('classify --workdir={cls} {chelsea} {truncated}', 'truncated.png'),
    ('classify --workdir={bad}/missing {chelsea}', 'missing'),
    ('classify --workdir={bad}/no_config {chelsea}', 'no config.json'),
    ('upscale --workdir={bad}/no_checkpoint {rgb} {dir}/o.png', 'no checkpoint'),
    ('upscale --workdir={bad}/comparison {rgb} {dir}/o.png', 'comparison/pfca: pass one of them'),
    ('upscale --workdir={bad}/other_model {rgb} {dir}/o.png', 'is of shape (8,) there, and the model needs (16,)'),
    ('classify --workdir={sr} {chelsea}', 'use `upscale`'),
    ('upscale --workdir={cls} {rgb} {dir}/o.png', 'use `classify`'),
    ('upscale --workdir={sr} {rgb} {dir}/nowhere/o.png', 'nowhere'),
    ('upscale --workdir={sr} {rgb} {text}/o.png', 'is a file, not a folder'),
    ('upscale --workdir={sr} {rgb} {dir}', 'is a folder'),
    ('upscale --workdir={sr} {rgb} {dir}/o.png --tile=12 --overlap=6', '--overlap=6'),
]


@pytest.mark.parametrize('argv, named', ERRORS)
def test_mistakes_end_in_one_line(argv, named, cls_run, sr_run, files, bad_workdirs, capsys):
  values = {os.path.splitext(k)[0]: v for k, v in files.items()}
  values.update(cls=cls_run, sr=sr_run, bad=bad_workdirs)
  args = [part.format(**values) for part in argv.split()]
  assert predict.main(args) == 2
  out, err = capsys.readouterr()
  assert out == '' and len(err.splitlines()) == 1 and err.startswith('error: ') and named in err, err
  assert not os.path.exists(os.path.join(files['dir'], 'o.png'))


def test_a_damaged_newest_checkpoint_predicts_with_the_one_before_and_says_so(cls_run, tmp_path, capsys):
  workdir = str(tmp_path / 'run')
  shutil.copytree(cls_run, workdir)
  checkpoints = os.path.join(workdir, 'checkpoints')
  shutil.copytree(os.path.join(checkpoints, '1'), os.path.join(checkpoints, '2'))  # A newer step...
  for path in glob.glob(os.path.join(checkpoints, '2', 'state', 'ocdbt.process_0', 'd', '*')):
    with open(path, 'r+b') as f:  # ...whose arrays were cut short.
      f.truncate(os.path.getsize(path) // 2)
  config, model, variables = restored(cls_run)
  used = run_folder.restore_variables(workdir, model, (1, 32, 32, 3))
  err = capsys.readouterr().err
  assert f'warning: the checkpoint of step 2 in {checkpoints} cannot be read (' in err
  assert err.rstrip().endswith('using the checkpoint of step 1') and len(err.splitlines()) == 1
  for x, y in zip(jax.tree.leaves(used), jax.tree.leaves(variables), strict=True):
    np.testing.assert_array_equal(x, y)
