"""The TensorFlow-free event writer: what it writes is what TensorFlow's and TensorBoard's readers read."""

import io

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image
from tensorboard.backend.event_processing import event_accumulator

from pfca_jax.train import event_file


def test_crc32c_check_values_and_record_layout():
  assert event_file.crc32c(b'') == 0
  assert event_file.crc32c(b'123456789') == 0xE3069283  # The CRC-32C check value.
  assert event_file.crc32c(bytes(32)) == 0x8A9136AA  # RFC 3720, B.4.
  for payload in (b'', b'x', bytes(range(256)) * 5):
    framed = event_file.record(payload)
    assert len(framed) == 16 + len(payload) and framed[12:12 + len(payload)] == payload


def test_tensorflow_reads_the_records_with_their_checksums(tmp_path):
  path = str(tmp_path / 'records.tfrecord')
  payloads = [b'', b'x', bytes(range(256)) * 5]
  with open(path, 'wb') as f:
    f.write(b''.join(event_file.record(p) for p in payloads))
  assert list(tf.data.TFRecordDataset(path).as_numpy_iterator()) == payloads
  with open(path, 'r+b') as f:  # One flipped bit in the last payload: TensorFlow's checksum must see it.
    f.seek(-5, 2)
    byte = f.read(1)
    f.seek(-5, 2)
    f.write(bytes([byte[0] ^ 1]))
  with pytest.raises(tf.errors.DataLossError):
    list(tf.data.TFRecordDataset(path).as_numpy_iterator())


def test_tensorboard_reads_scalars_images_and_text(tmp_path):
  writer = event_file.EventFile(str(tmp_path))
  image = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
  writer.write_scalars(3, {'train/loss': 1.25, 'eval/test/top1': np.float32(0.5)})
  writer.write_scalars(4, {'train/loss': 0.75})
  writer.write_images(4, {'samples/set/img': image})
  writer.write_text(0, 'config', '    {"seed": 0}')
  writer.close()

  events = list(tf.compat.v1.train.summary_iterator(writer.path))
  assert events[0].file_version == 'brain.Event:2'
  assert [event.step for event in events[1:]] == [3, 4, 4, 0]

  reader = event_accumulator.EventAccumulator(str(tmp_path))
  reader.Reload()
  assert [(e.step, e.value) for e in reader.Scalars('train/loss')] == [(3, 1.25), (4, 0.75)]
  assert [(e.step, e.value) for e in reader.Scalars('eval/test/top1')] == [(3, 0.5)]
  (png,) = reader.Images('samples/set/img')
  assert (png.step, png.height, png.width) == (4, 5, 7)
  np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(png.encoded_image_string))), image)
  (text,) = reader.Tensors('config')
  assert text.tensor_proto.string_val == [b'    {"seed": 0}']
  assert reader.summary_metadata['config'].plugin_data.plugin_name == 'text'
