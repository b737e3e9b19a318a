"""The offline quick starts: the digits and skimage-photo datasets, and both quick-start configs end to end, shrunk."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
from conftest import REPO, checkpointed_state, load_repo_module
from sklearn.datasets import load_digits

from pfca_jax import metrics
from pfca_jax.studies import compare
from pfca_jax.data import classification as cls_data
from pfca_jax.data import digits, skimage_photos, tfds_source
from pfca_jax.data import super_resolution as sr_data
from pfca_jax.errors import UserError
from pfca_jax.imresize import imresize
from pfca_jax.tasks import tiling
from pfca_jax.tasks.tiling import to_uint8
from pfca_jax.models.from_config import create_model

def load_config(name, arg=None):
  return load_repo_module(f'configs/{name}.py').get_config(arg)


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
  return str(tmp_path_factory.mktemp('tfds'))


def test_digits_prepare_offline_with_a_fixed_stratified_split(data_dir):
  builder = tfds_source.open_local_builder(digits.SklearnDigits, data_dir)
  assert builder.is_prepared()
  assert {k: v.num_examples for k, v in builder.info.splits.items()} == {'train': 1437, 'test': 360}
  source = load_digits()
  indices = digits.split_indices()
  assert not set(indices['train']) & set(indices['test'])
  # Stratified: each class has 20% +- one example in the test split.
  for label in range(10):
    in_class = np.sum(source.target == label)
    assert abs(np.sum(source.target[indices['test']] == label) - 0.2 * in_class) <= 1
  test = list(builder.as_dataset(split='test').as_numpy_iterator())
  by_pixels = {source.images[i].astype(np.uint8).tobytes(): i for i in indices['test']}
  for example in test[:20]:  # Stored grey levels are the 16 levels x 255 / 16, labels kept.
    levels = np.round(example['image'][:, :, 0].astype(float) * 16 / 255).astype(np.uint8)
    index = by_pixels[levels.tobytes()]
    assert example['label'] == source.target[index]
  # Opening again reuses the prepared copy instead of writing another.
  assert tfds_source.open_local_builder(digits.SklearnDigits, data_dir).info.splits['test'].num_examples == 360


def test_digits_preprocessing_resizes_greys_to_three_equal_channels(data_dir):
  config = load_config('quickstart')
  config.data_dir = data_dir
  info = cls_data.dataset_info(config)
  assert (info.num_classes, info.image_shape) == (10, (16, 16, 3))
  batches, steps = cls_data.eval_iterator(config, info, process_count=1, process_index=0)
  batch = next(batches)
  image = batch['image'][0]
  np.testing.assert_array_equal(image[..., 0], image[..., 2])
  # Normalised with the train statistics: mean near 0 over a batch, background (0) far below it.
  assert abs(batch['image'].mean()) < 0.5 and batch['image'].min() < -0.7
  assert steps == 1 and batch['mask'].all()


def test_skimage_photos_pairs_are_bicubic_and_held_out_by_scene(data_dir):
  builder = tfds_source.open_local_builder(skimage_photos.SkimagePhotos, data_dir, config='bicubic_x3')
  assert not set(skimage_photos.SPLITS['train']) & set(skimage_photos.SPLITS['validation'])
  examples = {ex['name'].decode(): ex for ex in builder.as_dataset(split='validation').as_numpy_iterator()}
  assert sorted(examples) == sorted(skimage_photos.SPLITS['validation'])
  rocket = examples['rocket']
  photo = skimage_photos.load_photo('rocket')  # 427 x 640: mod-cropped to 426 x 639 at x3.
  np.testing.assert_array_equal(rocket['hr'], photo[:426, :639])
  np.testing.assert_array_equal(rocket['lr'], imresize(photo[:426, :639], 1 / 3))
  camera = examples['camera']['hr']  # Greyscale, repeated to RGB.
  np.testing.assert_array_equal(camera[..., 0], camera[..., 1])


def test_unknown_datasets_list_the_valid_ones():
  config = load_config('quickstart_sr')
  config.dataset = 'set5'
  with pytest.raises(UserError, match='skimage_photos'):
    sr_data.dataset_info(config)
  with pytest.raises(UserError, match='sklearn_digits'):
    cls_data.get_spec('mnist')


def test_quickstart_config_argument_picks_the_compared_attention():
  assert load_config('quickstart').compare_attentions == 'none,pfca'
  assert load_config('quickstart', 'se').compare_attentions == 'none,se'
  assert load_config('quickstart_sr', 'none').compare_attentions == 'none'
  config = load_config('quickstart')
  config.compare_attentions = 'none,pfcaa'
  with pytest.raises(UserError, match="pfcaa is not valid; give a comma-separated list of none, pfca"):
    compare.attentions(config)


def test_an_explicit_attention_is_compared_with_the_baseline_or_refused():
  config = load_config('quickstart')
  assert compare.attentions(config, {'model.attention': 'se'}) == ['none', 'se']
  assert compare.attentions(config, {'model.attention': 'none'}) == ['none']
  assert compare.attentions(config, {'seed': 3}) == ['none', 'pfca']
  with pytest.raises(UserError, match="--config.model.attention='pcfa': unknown attention; valid: none, pfca"):
    compare.attentions(config, {'model.attention': 'pcfa'})
  config.compare_attentions = 'none,pfca,eca'
  explicit = {'model.attention': 'eca', 'compare_attentions': 'none,pfca,eca'}
  assert compare.attentions(config, explicit) == ['none', 'pfca', 'eca']
  with pytest.raises(UserError, match='--config.model.attention=se is not one of --config.compare_attentions='
                                      'none,pfca,eca, which are the attentions trained'):
    compare.attentions(config, dict(explicit, **{'model.attention': 'se'}))


def run_main(*args, timeout=300):
  return subprocess.run([sys.executable, '-m', 'pfca_jax.main', *args], cwd=REPO, capture_output=True, text=True,
                        timeout=timeout)


def checkpoint_files(workdir):
  return sorted(os.path.join(folder, name) for folder, _, names in os.walk(workdir) for name in names
                if 'checkpoints' in folder)


@pytest.mark.slow
def test_digits_quickstart_through_the_command_line(data_dir, tmp_path):
  """The README's first command, shrunk to a few steps: both runs, their results and the side-by-side table;
  the same command again re-reads them; a changed one is refused."""
  workdir = str(tmp_path / 'quickstart')
  args = ['--config=configs/quickstart.py', f'--workdir={workdir}', f'--config.data_dir={data_dir}',
          '--config.num_train_steps=4', '--config.log_every_steps=2', '--config.eval_every_steps=4',
          '--config.checkpoint_every_steps=4']
  done = run_main(*args)
  assert done.returncode == 0, done.stderr[-3000:]
  for attention in ('none', 'pfca'):
    with open(os.path.join(workdir, attention, 'results.json')) as f:
      results = json.load(f)
    assert results['steps'] == 4 and results['params'] == 272_474
    assert results['final']['eval/test/examples'] == 360
    assert results['config']['model']['attention'] == attention
    assert 'pfca_jax.main --config=configs/quickstart.py' in results['provenance']['command']
  table = open(os.path.join(workdir, 'comparison.md')).read()
  assert table in done.stdout
  header, _, none_row, pfca_row = table.splitlines()[:4]
  assert 'test top-1' in header and 'GFLOPs (16x16)' in header and 'train img/s' in header
  assert none_row.startswith('| none ') and '272,474 ' in none_row
  assert pfca_row.startswith('| pfca ') and '272,474 (+0)' in pfca_row
  footer = table.split('\n\n')[-2:]
  assert footer[0].startswith('Produced by pfca-jax 0.1.0') and '8 x cpu (cpu), 1 process' in footer[0]
  assert footer[1].startswith('Command: `') and '--config=configs/quickstart.py' in footer[1]
  assert os.path.getsize(os.path.join(workdir, 'comparison.png')) > 0

  saved = {path: os.path.getmtime(path) for path in checkpoint_files(workdir)}
  again = run_main(*args)
  assert again.returncode == 0, again.stderr[-3000:]
  assert again.stdout.count('(finished, re-read)') == 2 and 'step ' not in again.stdout
  assert table in again.stdout
  assert {path: os.path.getmtime(path) for path in checkpoint_files(workdir)} == saved

  results = open(os.path.join(workdir, 'pfca', 'results.json')).read()
  refused = run_main(*args, '--config.base_learning_rate=0.05', '--config.model.attention=pfca')
  assert refused.returncode == 2 and refused.stdout == ''
  lines = refused.stderr.strip().splitlines()
  lines = lines[next(i for i, line in enumerate(lines) if line.startswith('error:')):]  # After TensorFlow's noise.
  assert lines[0] == f'error: the run in {workdir}/none was trained with another config; resuming it with this ' \
                     'one would continue a different run:', refused.stderr
  assert lines[1:-1] == ['  base_learning_rate: checkpoint 0.1, this run 0.05']
  assert open(os.path.join(workdir, 'pfca', 'results.json')).read() == results
  # A misspelt attention is refused through the command in test_bad_inputs.py's table; one that is not among
  # those compared, in test_an_explicit_attention_is_compared_with_the_baseline_or_refused.


def test_sr_quickstart_scores_every_held_out_photo_against_bicubic(data_dir, tmp_path):
  config = load_config('quickstart_sr')
  config.update(dict(data_dir=data_dir, num_train_steps=2, lr_restart_periods=(2,), log_every_steps=1,
                     eval_every_steps=2, checkpoint_every_steps=2, hr_patch_size=32, batch_size=8,
                     eval_max_images=2, eval_num_samples=1))
  config.model.update(num_feat=8, num_block=1)
  config.compare_attentions = 'pfca'
  rows = compare.run(config, str(tmp_path))
  with open(tmp_path / 'pfca' / 'results.json') as f:
    results = json.load(f)
  assert rows[0]['final'] == results['final']
  images = results['per_image']['skimage_photos']
  names = [row['name'] for row in images]  # In TFDS's stored order (a hash of the keys).
  assert len(set(names)) == 2 and set(names) <= set(skimage_photos.SPLITS['validation'])
  # The bicubic reference is MATLAB bicubic of the stored LR image, scored like the model.
  hr = skimage_photos.load_photo(images[0]['name'])
  hr = hr[:hr.shape[0] // 2 * 2, :hr.shape[1] // 2 * 2]
  bicubic = imresize(imresize(hr, 0.5), 2)
  assert images[0]['bicubic_psnr_y'] == pytest.approx(metrics.psnr(bicubic, hr, 2), abs=1e-9)
  assert images[0]['bicubic_ssim_y'] == pytest.approx(metrics.ssim(bicubic, hr, 2), abs=1e-9)
  mean = np.mean([row['psnr_y'] for row in images])
  assert results['final']['eval/skimage_photos/psnr_y'] == pytest.approx(mean)
  assert 'eval/skimage_photos/bicubic_psnr_y' not in results['best']
  text = (tmp_path / 'comparison.md').read_text()
  assert 'skimage_photos: Y-PSNR dB / Y-SSIM per image' in text and f'| {names[1]} ' in text
  # The scores are those of the trained function, the whole-image forward pass, though evaluation tiles the
  # upsampling (the photos' LR sides, 213-320, exceed the 160-pixel tiles). Tiles are convolved in other
  # shapes than the whole image, so float32 sums differ in their last bits and a pixel whose value sits on
  # a rounding boundary may land one level apart: the scores are those of the tiled image, and it is the
  # whole-image output but for such pixels.
  model = create_model(config, scale=2)
  params = {'params': checkpointed_state(str(tmp_path / 'pfca'))['params']}
  forward = jax.jit(model.apply)
  upscale = tiling.Upscaler(model, tile=config.eval_tile, overlap=config.eval_tile_overlap,
                            devices=jax.local_devices()).use(params)
  for row, example in zip(images, sr_data.eval_images(config)):
    assert row['name'] == example['name'] and max(example['lr'].shape) > config.eval_tile
    lr = example['lr'].astype(np.float32) / 255
    whole = to_uint8(np.asarray(forward(params, lr[None]))[0])
    tiled = to_uint8(upscale(lr))
    apart = np.abs(tiled.astype(int) - whole)
    assert apart.max() <= 1 and np.count_nonzero(apart) <= 1e-5 * apart.size, (apart.max(), np.count_nonzero(apart))
    assert row['psnr_y'] == pytest.approx(metrics.psnr(tiled, example['hr'], 2), abs=1e-9)
    assert row['ssim_y'] == pytest.approx(metrics.ssim(tiled, example['hr'], 2), abs=1e-9)
