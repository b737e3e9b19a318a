"""Classification input pipelines: CIFAR-100, ImageNet and scikit-learn's digits as TFDS data.

    info = dataset_info(config)
    train = train_iterator(config, info, start_step=step)    # infinite, resumable
    batches, num_steps = eval_iterator(config, info)          # finite, padded, masked

Batches are per-process numpy dicts; the trainer assembles global arrays from
them. Datasets are entries of the `DATASETS` registry, so another one only needs
a `DatasetSpec`.
"""

import dataclasses
from typing import Any, Callable, Iterator

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from pfca_jax.data import SYNTHETIC, digits, epochs, file_order, preprocessing, tfds_source
from pfca_jax.data.metadata import DatasetInfo, steps_per_epoch  # noqa: F401 (part of this module's interface)
from pfca_jax.errors import UserError

Batch = epochs.Batch


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
  """How to read and preprocess one classification dataset.

  Attributes:
    tfds_name: the TFDS builder name.
    num_classes: number of labels.
    mean, std: per-channel statistics of [0, 1] images, for normalisation.
    decode: encoded image (tf.string) -> uint8 HxWx3.
    train_preprocess: (image, seed, config) -> float32 SxSx3 in [0, 255]; the
      image is encoded, or decoded when the train split is cached; all
      randomness comes from the stateless `seed` (shape [2]).
    eval_preprocess: (image, config) -> float32 SxSx3 in [0, 255].
    prepare_hint: how to prepare the data, `{data_dir}` standing for the directory.
    check_config: raises ValueError for config values the preprocessing cannot
      honour, before any data is read.
    local_builder: for data that ships inside an installed package, the TFDS
      builder class that prepares it offline on first use; None for datasets
      that must be prepared beforehand (see prepare_hint).
    label_names: class names when they are known without reading the data.
  """
  tfds_name: str
  num_classes: int
  mean: tuple[float, float, float]
  std: tuple[float, float, float]
  decode: Callable[[tf.Tensor], tf.Tensor]
  train_preprocess: Callable[[tf.Tensor, tf.Tensor, Any], tf.Tensor]
  eval_preprocess: Callable[[tf.Tensor, Any], tf.Tensor]
  prepare_hint: str
  check_config: Callable[[Any], None] = lambda config: None
  local_builder: type[tfds.core.DatasetBuilder] | None = None
  label_names: tuple[str, ...] | None = None


def _check_field(config, field: str, ok: bool, requirement: str) -> None:
  if not ok:
    raise UserError(f'config.{field}={getattr(config, field)!r} {requirement} (dataset {config.dataset!r})')


DATASETS: dict[str, DatasetSpec] = {
    'cifar100': DatasetSpec(
        tfds_name='cifar100',
        num_classes=100,
        mean=(0.5071, 0.4865, 0.4409),
        std=(0.2673, 0.2564, 0.2762),
        decode=preprocessing.decode_png,
        train_preprocess=lambda image, seed, config: preprocessing.cifar_train(
            image, seed, image_size=config.image_size, padding=config.crop_padding),
        eval_preprocess=lambda image, config: preprocessing.cifar_eval(image, image_size=config.image_size),
        prepare_hint=('Prepare it with `tfds build cifar100 --data_dir={data_dir}` on a machine with network, '
                      'or copy a prepared cifar100/ folder into {data_dir}.'),
        check_config=lambda config: _check_field(config, 'image_size', config.image_size == 32, 'must be 32, '
                                                 'CIFAR is trained at its native size'),
    ),
    'imagenet2012': DatasetSpec(
        tfds_name='imagenet2012',
        num_classes=1000,
        mean=(0.485, 0.456, 0.406),
        std=(0.229, 0.224, 0.225),
        decode=preprocessing.decode_jpeg,
        train_preprocess=lambda image, seed, config: preprocessing.imagenet_train(
            image, seed, image_size=config.image_size),
        eval_preprocess=lambda image, config: preprocessing.imagenet_eval(
            image, image_size=config.image_size, resize_size=config.eval_resize_size),
        prepare_hint=('Download ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar from https://image-net.org '
                      'into {data_dir}/downloads/manual, then run `tfds build imagenet2012 --data_dir={data_dir}`.'),
        check_config=lambda config: _check_field(config, 'eval_resize_size',
                                                 config.eval_resize_size >= config.image_size,
                                                 'must be at least config.image_size, the centre crop'),
    ),
    digits.NAME: DatasetSpec(
        tfds_name=digits.NAME,
        num_classes=digits.NUM_CLASSES,
        mean=digits.MEAN,
        std=digits.STD,
        decode=preprocessing.decode_png,
        train_preprocess=lambda image, seed, config: digits.train_preprocess(
            image, seed, image_size=config.image_size, padding=config.crop_padding),
        eval_preprocess=lambda image, config: digits.eval_preprocess(image, image_size=config.image_size),
        prepare_hint='It is prepared from the installed scikit-learn on first use; is scikit-learn installed?',
        local_builder=digits.SklearnDigits,
        label_names=digits.LABEL_NAMES,
    ),
}


def get_spec(name: str) -> DatasetSpec:
  if name not in DATASETS:
    raise UserError(f'Unknown dataset {name!r}; supported datasets: {", ".join(sorted([*DATASETS, SYNTHETIC]))}')
  return DATASETS[name]


def _open(config) -> tuple[DatasetSpec, tfds.core.DatasetBuilder]:
  spec = get_spec(config.dataset)
  spec.check_config(config)
  if spec.local_builder is not None:
    return spec, tfds_source.open_local_builder(spec.local_builder, config.data_dir)
  return spec, tfds_source.open_builder(spec.tfds_name, config.data_dir, spec.prepare_hint)


def dataset_info(config) -> DatasetInfo:
  """Sizes and shapes of `config.dataset`, read from the prepared data's metadata only.

  Raises:
    ValueError: unknown dataset or split, or an image size the dataset does not support.
    DatasetNotFoundError: the dataset is not prepared in `config.data_dir`.
  """
  spec, builder = _open(config)
  return DatasetInfo(
      num_classes=spec.num_classes,
      num_train_examples=tfds_source.num_examples(builder, config.train_split),
      num_eval_examples=tfds_source.num_examples(builder, config.eval_split),
      image_shape=(config.image_size, config.image_size, 3),
  )


def _image_and_label(example):
  return {'image': example['image'], 'label': tf.cast(example['label'], tf.int32)}


_ENCODED = tfds.decode.PartialDecoding({'image': True, 'label': True},
                                       decoders={'image': tfds.decode.SkipDecoding()})


def _read_encoded(builder, split) -> tf.data.Dataset:
  """{'image': encoded bytes, 'label'} in TFDS's order (for evaluation, where the order does not matter)."""
  read_config = tfds.ReadConfig(try_autocache=False, options=epochs.read_options())
  return builder.as_dataset(split=split, shuffle_files=False, decoders=_ENCODED,
                            read_config=read_config).map(_image_and_label)


def _read_train(builder, split, files, position: int) -> tf.data.Dataset:
  """{'image': encoded bytes, 'label'} of `files` (file_order instructions) read in turn, from `position` on."""
  return file_order.read_in_order(builder, split, files, decoders=_ENCODED, options=epochs.read_options(),
                                  position=position).map(_image_and_label)


def _cached_decoded(builder, spec: DatasetSpec, split, files) -> tf.data.Dataset:
  """The split decoded to uint8, in the order of `files`, cached in memory when first read in full.

  The cache lives as long as the returned dataset; every epoch pipeline is built
  on this one object, so the data is read and decoded once per run.
  """
  ds = _read_train(builder, split, files, 0).map(lambda ex: {'image': spec.decode(ex['image']), 'label': ex['label']},
                                                 num_parallel_calls=tf.data.AUTOTUNE)
  return ds.cache()


def _train_epoch(read_from: Callable[[int], tf.data.Dataset], num_examples: int, spec: DatasetSpec, config, *,
                 decode: bool, shuffle_seed: int, augment_seed: np.ndarray, skip_examples: int,
                 local_batch: int) -> tf.data.Dataset:
  """Shuffled, augmented batches of one epoch, from example `skip_examples` on.

  read_from(p) is the epoch's sequence of examples from its p-th on; windows of
  config.shuffle_buffer_size consecutive ones are shuffled (file_order.windowed_shuffle),
  so a resumed epoch reads at most one file and one window before its first batch.
  Example i of the epoch is augmented with the seed fold_in(augment_seed, i), so
  a resumed epoch gives the same pixels whatever the parallelism. With `decode`
  the (encoded) images are decoded first, after the skip: the train preprocessing
  then sees what the cache would have held.
  """
  ds = file_order.windowed_shuffle(read_from, num_examples=num_examples, window=config.shuffle_buffer_size,
                                   shuffle_seed=shuffle_seed, start=skip_examples)
  augment_seed = tf.constant(augment_seed)

  def preprocess(index, example):
    seed = tf.random.experimental.stateless_fold_in(augment_seed, index)
    image = spec.decode(example['image']) if decode else example['image']
    image = spec.train_preprocess(image, seed, config)
    return {'image': preprocessing.normalize(image, spec.mean, spec.std), 'label': example['label']}

  ds = ds.map(preprocess, num_parallel_calls=tf.data.AUTOTUNE)
  ds = ds.batch(local_batch, drop_remainder=True)
  return ds.prefetch(tf.data.AUTOTUNE).with_options(epochs.read_options())


def train_iterator(config, info: DatasetInfo, start_step: int = 0, *, process_index: int | None = None,
                   process_count: int | None = None) -> Iterator[Batch]:
  """Infinite per-process train batches {'image': float32 (B, S, S, 3), 'label': int32 (B,)}.

  B = config.batch_size // process_count. Epoch e is a pass over this process's
  share of the train split (N // process_count examples), in an order that
  depends only on (config.seed, e, process_index): the share's files are read one
  after the other in an order drawn from them, and each window of
  config.shuffle_buffer_size consecutive examples is shuffled with a seed of its
  own (pfca_jax/data/file_order.py). With config.cache_train the decoded share is
  kept in memory after the first full pass, in a fixed file order, and only the
  windows shuffle. Each epoch yields exactly steps_per_epoch batches.

  Batch k of this iterator is bit-identical to batch start_step + k of one
  started at step 0. It resumes at epoch start_step // steps_per_epoch, example
  (start_step % steps_per_epoch) * B: files before that example's window are
  skipped by their record counts, so start-up reads at most one file and one
  window (read, not decoded, beyond the resume point), wherever the resume point
  is in the epoch. With config.cache_train a resumed partial epoch is read from
  the files the same way, and the next epoch fills the cache.

  `process_index`/`process_count` default to JAX's; tests pass them to simulate
  several processes.
  """
  process_index, process_count = epochs.process_index_count(process_index, process_count)
  spe = steps_per_epoch(info, config, process_count=process_count)
  local_batch = config.batch_size // process_count
  spec, builder = _open(config)
  share = tfds_source.process_share(config.train_split, process_index, process_count, drop_remainder=True)
  num_share = tfds_source.num_examples(builder, share)
  if num_share // local_batch != spe:
    raise ValueError(f'The train split of {config.dataset} in {config.data_dir} does not have the '
                     f'{info.num_train_examples} examples `info` says; was `info` made from another config?')
  files = file_order.file_instructions(builder, share)
  cached = _cached_decoded(builder, spec, share, files) if config.cache_train else None

  def build_epoch(files_seed, shuffle_seed, augment_seed, skip_examples):
    if cached is not None and skip_examples == 0:
      read_from, decode = (lambda position: cached), False  # The cache fixed the file order; windows shuffle.
    elif cached is not None:
      # A resumed partial epoch reads the cache's order from the files; the next (whole) epoch fills the cache.
      read_from, decode = (lambda position: _read_train(builder, share, files, position)), True
    else:
      epoch_files = files if files is None else file_order.ordered(files, files_seed)
      read_from, decode = (lambda position: _read_train(builder, share, epoch_files, position)), False
    return _train_epoch(read_from, num_share, spec, config, decode=decode, shuffle_seed=shuffle_seed,
                        augment_seed=augment_seed, skip_examples=skip_examples, local_batch=local_batch)

  return epochs.resumable_epochs(build_epoch, seed=config.seed, process_index=process_index,
                                 start_step=start_step, steps_per_epoch=spe, local_batch=local_batch, what='train')


def eval_dataset(config, split: str | None = None, *, process_index: int | None = None,
                 process_count: int | None = None) -> tuple[tf.data.Dataset, int]:
  """This process's padded eval batches and their number, the same on every process.

  The split is shared without drop (the first N % process_count processes get
  one more example), then each share is padded with mask-False examples to
  num_steps * B with num_steps = ceil(ceil(N / process_count) / B), so every
  real example is seen exactly once and all processes run the same steps.
  """
  process_index, process_count = epochs.process_index_count(process_index, process_count)
  spec, builder = _open(config)
  split = config.eval_split if split is None else split
  local_batch = epochs.local_batch_size(config.eval_batch_size, process_count, 'eval_batch_size')
  total = tfds_source.num_examples(builder, split)
  num_steps = -(-epochs.largest_share(total, process_count) // local_batch)
  share = tfds_source.process_share(split, process_index, process_count, drop_remainder=False)
  num_padding = num_steps * local_batch - tfds_source.num_examples(builder, share)

  def preprocess(example):
    image = spec.eval_preprocess(example['image'], config)
    return {'image': preprocessing.normalize(image, spec.mean, spec.std), 'label': example['label'],
            'mask': tf.constant(True)}

  ds = _read_encoded(builder, share).map(preprocess, num_parallel_calls=tf.data.AUTOTUNE)
  padding = {'image': tf.zeros((config.image_size, config.image_size, 3), tf.float32),
             'label': tf.constant(0, tf.int32), 'mask': tf.constant(False)}
  ds = ds.concatenate(tf.data.Dataset.from_tensors(padding).repeat(num_padding))
  ds = ds.batch(local_batch, drop_remainder=True)
  return ds.prefetch(tf.data.AUTOTUNE).with_options(epochs.read_options()), num_steps


def eval_iterator(config, info: DatasetInfo, split: str | None = None, *, process_index: int | None = None,
                  process_count: int | None = None) -> tuple[Iterator[Batch], int]:
  """(iterator, num_steps): exactly num_steps per-process batches {'image', 'label', 'mask': bool (B,)}.

  B = config.eval_batch_size // process_count; split defaults to config.eval_split.
  Padding examples have mask False, label 0 and all-zero images.
  """
  del info  # The split may not be config.eval_split, so its size is read from the metadata.
  ds, num_steps = eval_dataset(config, split, process_index=process_index, process_count=process_count)
  return epochs.exactly(ds.as_numpy_iterator(), num_steps, f'eval split {split or config.eval_split}'), num_steps
