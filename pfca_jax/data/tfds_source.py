"""Reading prepared TFDS datasets: offline builders and per-process shares.

Training machines may have no network, and on some of them a DNS lookup hangs
for minutes, so nothing here may download or probe a remote bucket: a builder is
opened from `data_dir` only, and a dataset that is not there, whose metadata
cannot be read or whose record files are missing or cut short, fails at once
with a `DatasetNotFoundError` that says how to prepare it.

TensorFlow is only used for input pipelines; it is imported here, before any
other module of the package touches it (`image_io.import_tensorflow`: without
its start-up lines on stderr), and is denied the GPUs so that it never reserves
accelerator memory that JAX needs.
"""

import os
import re

from pfca_jax import image_io
from pfca_jax.errors import UserError

# Without TensorFlow's start-up lines on stderr (a refused command prints one line, nothing else).
tf = image_io.import_tensorflow()
import tensorflow_datasets as tfds  # noqa: E402 -- after TensorFlow, whose import above is the silenced one.


class DatasetNotFoundError(UserError):
  """The dataset is not prepared in the data directory (the message says how to prepare it)."""


def mock_data_active() -> bool:
  """Whether `tfds.testing.mock_data` is in effect.

  It replaces `DatasetBuilder.as_dataset` by a function local to `mock_data`;
  the qualified name says so without touching any data.
  """
  return 'mock_data.<locals>' in getattr(tfds.core.DatasetBuilder.as_dataset, '__qualname__', '')


def open_builder(name: str, data_dir: str | None, prepare_hint: str) -> tfds.core.DatasetBuilder:
  """The builder of a dataset that is prepared in `data_dir` (or mocked by tfds.testing.mock_data).

  Args:
    name: the TFDS name, e.g. 'cifar100'.
    data_dir: the TFDS data directory; None means TFDS's default one.
    prepare_hint: how to prepare the dataset, with `{data_dir}` where the
      directory goes; it ends the one-line error message.

  Raises:
    DatasetNotFoundError: the dataset (at the version this TFDS expects) is not
      prepared there.
  """
  # try_gcs=False is the default of this TFDS, but it is what keeps `builder`
  # from asking a public bucket about the dataset, so it is said explicitly.
  builder = _damaged_as_user_error(lambda: tfds.builder(name, data_dir=data_dir, try_gcs=False), name, data_dir,
                                   prepare_hint)
  if not builder.is_prepared() and not mock_data_active():
    root = builder.data_dir_root
    found = _prepared_versions(os.path.join(root, name))
    elsewhere = f' (found only version(s) {", ".join(found)})' if found else ''
    hint = prepare_hint.format(data_dir=root)
    raise DatasetNotFoundError(
        f"TFDS dataset '{name}' version {builder.version} is not prepared in data_dir '{root}'{elsewhere}. "
        f'{hint}')
  return builder


def open_local_builder(builder_cls: type[tfds.core.DatasetBuilder], data_dir: str | None,
                       **builder_kwargs) -> tfds.core.DatasetBuilder:
  """The builder of a dataset made from files of an installed package, prepared offline if it is not yet.

  Preparing writes ordinary TFRecords into `data_dir`, so every later read is that of any prepared
  TFDS dataset. Several processes may prepare at once (a multi-process run on one host): TFDS
  writes into a temporary folder and renames it, and a process that loses the race finds the
  winner's copy prepared.
  """
  builder = _damaged_as_user_error(lambda: builder_cls(data_dir=data_dir, **builder_kwargs), builder_cls.name,
                                   data_dir, f'Delete {{data_dir}}/{builder_cls.name}: the next run prepares it again.')
  if builder.is_prepared() or mock_data_active():
    return builder
  print(f"Preparing '{builder.info.full_name}' in {builder.data_dir_root} (first use, offline)", flush=True)
  tfds.disable_progress_bar()  # TFDS's bars and shard names would bury the run's own output.
  try:
    builder.download_and_prepare()
  except Exception as e:  # noqa: BLE001 -- checked just below: only a lost race is forgiven.
    builder = builder_cls(data_dir=data_dir, **builder_kwargs)
    if not builder.is_prepared():
      raise DatasetNotFoundError(f"could not prepare '{builder.name}' in data_dir "
                                 f"'{builder.data_dir_root}': {e}") from None
  return builder


def _damaged_as_user_error(open_builder_fn, name: str, data_dir: str | None, prepare_hint: str):
  """The builder, or one line when its prepared metadata (dataset_info.json, features.json) cannot be read."""
  try:
    return open_builder_fn()
  except Exception as e:  # noqa: BLE001 -- TFDS wraps JSON, protobuf and file errors alike.
    reason = (str(e).strip().splitlines() or [type(e).__name__])[-1]
    reason = re.sub(r'^Failed to construct dataset .*?builder_kwargs ".*?": ', '', reason).rstrip('.')
    root = data_dir or tfds.core.constants.DATA_DIR
    raise DatasetNotFoundError(f"TFDS dataset '{name}' in data_dir '{root}' is damaged: its metadata cannot be read "
                               f'({reason}). {prepare_hint.format(data_dir=root)}') from None


def check_files(builder: tfds.core.DatasetBuilder, split) -> None:
  """The record files of `split` are all there and not shorter than the examples they hold (a copy cut short).

  Only names and sizes are looked at (one listing of the folder, which a bucket answers quickly too;
  sizes of local files only): a shard damaged inside still fails when read. The sizes are judged
  against the metadata's byte count of the split, which counts the serialized examples without their
  record framing, so a complete copy is never refused.
  """
  info = builder.info.splits[split]
  paths = [str(p) for p in info.filepaths]
  present = set(tf.io.gfile.listdir(str(builder.data_dir)))
  missing = [p for p in paths if os.path.basename(p) not in present]
  if missing:
    raise DatasetNotFoundError(f"TFDS dataset '{builder.name}' in '{builder.data_dir}' is incomplete: {len(missing)} "
                               f'of the {len(paths)} files of split {split!r} are missing, e.g. '
                               f'{os.path.basename(missing[0])}; prepare it again or copy the whole folder')
  if any('://' in p for p in paths):
    return
  size, expected = sum(os.path.getsize(p) for p in paths), int(info.num_bytes or 0)
  if size < expected:
    raise DatasetNotFoundError(f"TFDS dataset '{builder.name}' in '{builder.data_dir}' is incomplete: the files of "
                               f'split {split!r} hold {size:,} bytes, fewer than the {expected:,} bytes '
                               'of its examples; prepare it again or copy the whole folder')


def _prepared_versions(dataset_dir: str) -> list[str]:
  """Versions with a dataset_info.json under a dataset folder, to tell a version mismatch from no data."""
  if not os.path.isdir(dataset_dir):
    return []
  return sorted(v for v in os.listdir(dataset_dir)
                if os.path.isfile(os.path.join(dataset_dir, v, 'dataset_info.json')))


def num_examples(builder: tfds.core.DatasetBuilder, split) -> int:
  """Number of examples of a split or sub-split, with the available splits named when it is unknown.

  Under mock_data the metadata has no split sizes and every sub-split yields the
  whole mocked data, so only whole splits are accepted there, counted from the
  mocked dataset's cardinality (which mock_data sets to its num_examples).
  """
  if mock_data_active():
    if not isinstance(split, str) or not split.isidentifier():
      raise ValueError(f'Split {split!r}: under tfds.testing.mock_data only whole splits can be read, since '
                       'every sub-split yields all the mocked examples')
    return int(builder.as_dataset(split=split).cardinality())
  try:
    count = builder.info.splits[split].num_examples
  except (KeyError, ValueError) as e:
    available = ', '.join(sorted(builder.info.splits.keys()))
    raise UserError(f"Split {split!r} of '{builder.name}' is not valid ({e}); available splits: {available}") from None
  check_files(builder, split)
  return count


def process_share(split: str, process_index: int, process_count: int, *, drop_remainder: bool):
  """The sub-split that process `process_index` of `process_count` reads.

  With `drop_remainder` every share has exactly N // process_count examples (the
  last N % process_count are never read); without it the first N % process_count
  shares hold one extra example, so together they cover the split exactly once.
  A single process reads the split itself.
  """
  if not 0 <= process_index < process_count:
    raise ValueError(f'process_index={process_index} is not in [0, {process_count})')
  if process_count == 1:
    return split
  if mock_data_active():
    raise ValueError(f'{process_count} processes cannot read disjoint shares under tfds.testing.mock_data, '
                     'which ignores sub-splits; write a small real dataset instead (pfca_jax.data.fake_data)')
  return tfds.even_splits(split, n=process_count, drop_remainder=drop_remainder)[process_index]
