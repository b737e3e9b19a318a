"""TensorBoard event files written without TensorFlow, TensorBoard or protobuf.

An event file is a sequence of records, each framed as TFRecord does it (length, CRC of the length,
data, CRC of the data, with TFRecord's masked CRC-32C), holding one serialised `Event` protocol
buffer. The few messages written here (tensorflow/core/util/event.proto and
tensorflow/core/framework/summary.proto) are encoded by hand:

    Event   {1: wall_time double, 2: step int64, 3: file_version string, 5: summary Summary}
    Summary {1: repeated value Value}
    Value   {1: tag string, 2: simple_value float, 4: image Image, 8: tensor TensorProto,
             9: metadata SummaryMetadata}
    Image   {1: height int32, 2: width int32, 3: colorspace int32, 4: encoded_image_string bytes}
    TensorProto {1: dtype enum (7: DT_STRING), 2: tensor_shape (empty: a scalar), 8: string_val bytes}
    SummaryMetadata {1: plugin_data {1: plugin_name string, 2: content bytes}}

TensorBoard reads these as it reads tf.summary's: scalars under their tags, images as PNGs. The
trainer writes through this so that a machine with JAX but without TensorFlow still gets its curves.
"""

import io
import os
import socket
import struct
import time

import numpy as np

_CRC32C_POLY = 0x82F63B78  # Castagnoli, reflected.


def _crc_table() -> list[int]:
  table = []
  for byte in range(256):
    crc = byte
    for _ in range(8):
      crc = (crc >> 1) ^ (_CRC32C_POLY if crc & 1 else 0)
    table.append(crc)
  return table


_TABLE = _crc_table()


def crc32c(data: bytes) -> int:
  """CRC-32C of `data` (crc32c(b'123456789') == 0xE3069283). Pure Python: event records are small."""
  crc = 0xFFFFFFFF
  table = _TABLE
  for byte in data:
    crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
  return crc ^ 0xFFFFFFFF


def masked_crc32c(data: bytes) -> int:
  """TFRecord's mask: rotate right by 15 bits and add a constant, so CRCs of CRCs do not degenerate."""
  crc = crc32c(data)
  return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def record(data: bytes) -> bytes:
  """One TFRecord: uint64 length, masked CRC of it, the data, masked CRC of the data (little-endian)."""
  length = struct.pack('<Q', len(data))
  return length + struct.pack('<I', masked_crc32c(length)) + data + struct.pack('<I', masked_crc32c(data))


def _varint(value: int) -> bytes:
  value &= (1 << 64) - 1  # Negative int64 as protobuf writes it: ten bytes of two's complement.
  out = bytearray()
  while True:
    byte, value = value & 0x7F, value >> 7
    out.append(byte | (0x80 if value else 0))
    if not value:
      return bytes(out)


def _field(number: int, wire_type: int) -> bytes:
  return _varint(number << 3 | wire_type)


def _int(number: int, value: int) -> bytes:
  return _field(number, 0) + _varint(value)


def _bytes(number: int, value: bytes) -> bytes:
  return _field(number, 2) + _varint(len(value)) + value


def _event(step: int, *, file_version: str | None = None, values: list[bytes] = ()) -> bytes:
  event = _field(1, 1) + struct.pack('<d', time.time()) + _int(2, step)
  if file_version is not None:
    event += _bytes(3, file_version.encode())
  if values:
    event += _bytes(5, b''.join(_bytes(1, value) for value in values))
  return event


def scalar_value(tag: str, value: float) -> bytes:
  return _bytes(1, tag.encode()) + _field(2, 5) + struct.pack('<f', value)


def image_value(tag: str, image: np.ndarray) -> bytes:
  """A uint8 HxWx3 image as a PNG (TensorBoard's image summary)."""
  from PIL import Image  # Only runs that write images need it.
  buffer = io.BytesIO()
  Image.fromarray(image).save(buffer, format='PNG')
  height, width, channels = image.shape
  encoded = _int(1, height) + _int(2, width) + _int(3, channels) + _bytes(4, buffer.getvalue())
  return _bytes(1, tag.encode()) + _bytes(4, encoded)


def text_value(tag: str, markdown: str) -> bytes:
  """A string tensor for TensorBoard's text plugin (its TEXT tab renders it as markdown)."""
  tensor = _int(1, 7) + _bytes(2, b'') + _bytes(8, markdown.encode())
  metadata = _bytes(1, _bytes(1, b'text'))
  return _bytes(1, tag.encode()) + _bytes(8, tensor) + _bytes(9, metadata)


class EventFile:
  """Appends events to LOGDIR/events.out.tfevents.<time>.<host>, a new file per writer, as TensorFlow names them."""

  def __init__(self, logdir: str):
    os.makedirs(logdir, exist_ok=True)
    self.path = os.path.join(logdir, f'events.out.tfevents.{time.time():.6f}.{socket.gethostname()}.pfca_jax')
    self._file = open(self.path, 'ab')
    self._file.write(record(_event(0, file_version='brain.Event:2')))
    self._file.flush()

  def write_scalars(self, step: int, scalars: dict) -> None:
    self._write(step, [scalar_value(tag, float(value)) for tag, value in scalars.items()])

  def write_images(self, step: int, images: dict) -> None:
    """{tag: uint8 HxWx3} as PNG image summaries."""
    self._write(step, [image_value(tag, np.asarray(image, np.uint8)) for tag, image in images.items()])

  def write_text(self, step: int, tag: str, markdown: str) -> None:
    self._write(step, [text_value(tag, markdown)])

  def _write(self, step: int, values: list[bytes]) -> None:
    self._file.write(record(_event(int(step), values=values)))
    self._file.flush()  # Writes come every log step at most: a killed run keeps all it logged.

  def close(self) -> None:
    self._file.close()
