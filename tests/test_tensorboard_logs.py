"""What the trainer's Reporter writes to TensorBoard (through tensorboardX), read back with TensorBoard's reader."""

import glob
import io
import os
import subprocess
import sys
import time

import jax.numpy as jnp
import ml_collections
import numpy as np
from PIL import Image
from tensorboard.backend.event_processing import event_accumulator, event_file_loader

from conftest import REPO
from pfca_jax.train import reporting, time_breakdown


def read(logdir):
  reader = event_accumulator.EventAccumulator(str(logdir))
  reader.Reload()
  return reader


def event_files(logdir):
  return sorted(glob.glob(os.path.join(str(logdir), 'events.out.tfevents.*')))


def test_reporter_writes_scalars_images_and_config_text(tmp_path, capsys, monkeypatch):
  monkeypatch.setattr(reporting, 'FLUSH_SECONDS', 600)  # Only close() flushes, as for a run stopped by SIGTERM.
  reporter = reporting.Reporter(str(tmp_path), total_steps=4, global_batch=2, start_step=0)
  reporter.write_config(0, ml_collections.ConfigDict({'seed': 0}))
  for step, loss in ((1, 1.5), (2, 0.5)):  # Device scalars, as the train step returns them.
    reporter.add_train(step, {'loss': jnp.float32(loss), 'accuracy': jnp.float32(step / 4), 'lr': jnp.float32(0.1),
                              'grad_norm': jnp.float32(2.0)})
  # 0.5 s stepping and 0.5 s waiting for input: 4 images over 1 s of training, half of it waiting; the rest
  # of the interval is not training.
  lap = {'startup': 0.0, 'compile': 2.0, 'train_step': 0.5, 'input': 0.5, 'eval': 3.0, 'checkpoint': 1.0,
         'other': 0.25}
  assert set(lap) == set(time_breakdown.CATEGORIES)
  reporter.write_train(2, reporter.fetch_train(), lap)
  reporter.write_eval(2, 'test', {'top1': np.float32(0.5), 'examples': 40}, seconds=1.0)
  image = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
  reporter.write_image(2, 'samples/set/img', image)
  reporter.close()

  (path,) = event_files(tmp_path)
  first = next(event_file_loader.LegacyEventFileLoader(path).Load())
  assert first.file_version == 'brain.Event:2'
  logs = read(tmp_path)
  assert set(logs.Tags()['scalars']) == {'train/loss', 'train/accuracy', 'train/lr', 'train/grad_norm',
                                         'train/images_per_sec', 'train/input_wait_share', 'eval/test/top1',
                                         'eval/test/examples'}
  assert [(e.step, e.value) for e in logs.Scalars('train/images_per_sec')] == [(2, 4.0)]
  assert [(e.step, e.value) for e in logs.Scalars('train/input_wait_share')] == [(2, 0.5)]
  assert [(e.step, e.value) for e in logs.Scalars('train/loss')] == [(2, 1.0)]  # The mean of the interval.
  assert [(e.step, e.value) for e in logs.Scalars('train/accuracy')] == [(2, 0.375)]
  assert [(e.step, e.value) for e in logs.Scalars('eval/test/top1')] == [(2, 0.5)]
  assert [(e.step, e.value) for e in logs.Scalars('eval/test/examples')] == [(2, 40.0)]
  (png,) = logs.Images('samples/set/img')
  assert (png.step, png.height, png.width) == (2, 5, 7)
  np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(png.encoded_image_string))), image)
  np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / 'samples' / 'set' / 'img_step2.png')), image)
  (text,) = logs.Tensors('config/text_summary')
  assert text.step == 0 and text.tensor_proto.string_val == [b'    {\n      "seed": 0\n    }']
  assert logs.summary_metadata['config/text_summary'].plugin_data.plugin_name == 'text'
  assert 'step 2/4 | loss 1.0000 | acc 0.3750 | lr 0.1 | 4.0 img/s | input 50% | ETA 0m01s' in capsys.readouterr().out


def test_writers_started_in_the_same_second_keep_a_file_each(tmp_path):
  for step in (1, 2):  # A run and its resumption, as fast as they can follow each other.
    writer = reporting.summary_writer(str(tmp_path))
    writer.add_scalar('train/loss', float(step), step)
    writer.close()
  assert len(event_files(tmp_path)) == 2
  assert [(e.step, e.value) for e in read(tmp_path).Scalars('train/loss')] == [(1, 1.0), (2, 2.0)]


def test_events_reach_the_file_while_the_writer_is_open(tmp_path, monkeypatch):
  monkeypatch.setattr(reporting, 'FLUSH_SECONDS', 0.2)  # What a run killed without warning still has on disk.
  writer = reporting.summary_writer(str(tmp_path))
  for step in (1, 2, 3):
    writer.add_scalar('train/loss', float(step), step)
  deadline, steps = time.monotonic() + 5, []
  while len(steps) < 3 and time.monotonic() < deadline:
    time.sleep(0.1)
    logs = read(tmp_path)
    steps = [e.step for e in logs.Scalars('train/loss')] if 'train/loss' in logs.Tags()['scalars'] else []
  writer.close()
  assert steps == [1, 2, 3]


FAKE_TORCH = "import sys; sys.stderr.write('the fake torch was imported\\n')"

WRITE_WITHOUT_TORCH = '''
import sys
from pfca_jax.train import reporting, time_breakdown
reporting.summary_writer(sys.argv[1]).close()
print(sorted(name for name in ('torch', 'tensorflow') if name in sys.modules))
import torch  # Importable once the writer exists: torch is hidden only while tensorboardX is imported.
print(torch.__file__)
'''


def test_the_writer_imports_neither_torch_nor_tensorflow(tmp_path):
  (tmp_path / 'torch.py').write_text(FAKE_TORCH)  # Stands in for PyTorch, installed or not.
  env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path), os.environ.get('PYTHONPATH', '')]))
  result = subprocess.run([sys.executable, '-c', WRITE_WITHOUT_TORCH, str(tmp_path / 'logs')], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  assert result.stdout.splitlines() == ['[]', str(tmp_path / 'torch.py')]
  assert len(event_files(tmp_path / 'logs')) == 1
