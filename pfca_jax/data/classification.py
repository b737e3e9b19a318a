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

import jax
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from pfca_jax.data import digits, epochs, preprocessing, tfds_source
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
    raise UserError(f'Unknown dataset {name!r}; supported datasets: {", ".join(sorted(DATASETS))}')
  return DATASETS[name]


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
  """What the trainer needs to know before reading any example.

  `image_shape` is that of the preprocessed images the model sees.
  """
  num_classes: int
  num_train_examples: int
  num_eval_examples: int
  image_shape: tuple[int, int, int]


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


def steps_per_epoch(info: DatasetInfo, config, *, process_count: int | None = None) -> int:
  """Global steps in one pass over the train split.

  Every process reads num_train // process_count examples in full batches only,
  so all processes run the same number of steps and the remainders are dropped.
  """
  process_count = jax.process_count() if process_count is None else process_count
  local_batch = epochs.local_batch_size(config.batch_size, process_count, 'batch_size')
  steps = (info.num_train_examples // process_count) // local_batch
  if steps == 0:
    raise UserError(f'The train split ({info.num_train_examples} examples over {process_count} processes) is '
                     f'smaller than one batch (config.batch_size={config.batch_size})')
  return steps


def _image_and_label(example):
  return {'image': example['image'], 'label': tf.cast(example['label'], tf.int32)}


def _read_encoded(builder, split, *, shuffle_seed: int | None) -> tf.data.Dataset:
  """{'image': encoded bytes, 'label'} in file order, the file order shuffled when a seed is given."""
  read_config = tfds.ReadConfig(shuffle_seed=shuffle_seed, try_autocache=False, options=epochs.read_options())
  decoders = tfds.decode.PartialDecoding({'image': True, 'label': True},
                                         decoders={'image': tfds.decode.SkipDecoding()})
  ds = builder.as_dataset(split=split, shuffle_files=shuffle_seed is not None, decoders=decoders,
                          read_config=read_config)
  return ds.map(_image_and_label)


def _cached_decoded(builder, spec: DatasetSpec, split) -> tf.data.Dataset:
  """A split decoded to uint8 and cached in memory when first read in full.

  The cache lives as long as the returned dataset; every epoch pipeline is built
  on this one object, so the data is read and decoded once per run.
  """
  ds = _read_encoded(builder, split, shuffle_seed=None)
  ds = ds.map(lambda ex: {'image': spec.decode(ex['image']), 'label': ex['label']},
              num_parallel_calls=tf.data.AUTOTUNE)
  return ds.cache()


def _train_epoch(examples: tf.data.Dataset, spec: DatasetSpec, config, *, shuffle_seed: int,
                 augment_seed: np.ndarray, skip_examples: int, local_batch: int) -> tf.data.Dataset:
  """Shuffled, augmented batches of one epoch of `examples`, from example `skip_examples` on.

  Example i of the epoch is augmented with the seed fold_in(augment_seed, i), i
  counted before the skip, so a resumed epoch gives the same pixels whatever
  the parallelism. The skip comes before decoding: resuming costs reading the
  skipped records, not decoding them.
  """
  ds = examples.shuffle(config.shuffle_buffer_size, seed=shuffle_seed, reshuffle_each_iteration=False)
  ds = ds.enumerate().skip(skip_examples)
  augment_seed = tf.constant(augment_seed)

  def preprocess(index, example):
    seed = tf.random.experimental.stateless_fold_in(augment_seed, index)
    image = spec.train_preprocess(example['image'], seed, config)
    return {'image': preprocessing.normalize(image, spec.mean, spec.std), 'label': example['label']}

  ds = ds.map(preprocess, num_parallel_calls=tf.data.AUTOTUNE)
  ds = ds.batch(local_batch, drop_remainder=True)
  return ds.prefetch(tf.data.AUTOTUNE).with_options(epochs.read_options())


def train_iterator(config, info: DatasetInfo, start_step: int = 0, *, process_index: int | None = None,
                   process_count: int | None = None) -> Iterator[Batch]:
  """Infinite per-process train batches {'image': float32 (B, S, S, 3), 'label': int32 (B,)}.

  B = config.batch_size // process_count. Epoch e is a pass over this process's
  share of the train split (N // process_count examples), in an order that
  depends only on (config.seed, e, process_index): file order and shuffle buffer
  are seeded from them; with config.cache_train the decoded share is kept in
  memory after the first pass and only the buffer shuffles. Each epoch yields
  exactly steps_per_epoch batches.

  Batch k of this iterator is bit-identical to batch start_step + k of one
  started at step 0. It resumes at epoch start_step // steps_per_epoch and
  skips (start_step % steps_per_epoch) * B examples of it before decoding. That
  costs reading and shuffling (not decoding) up to one epoch's share of records:
  under a second for CIFAR, for ImageNet up to ~140 GB / process_count of
  TFRecords, i.e. minutes from a local disk; with config.cache_train it is the
  first pass that fills the cache anyway.

  `process_index`/`process_count` default to JAX's; tests pass them to simulate
  several processes.
  """
  process_index, process_count = epochs.process_index_count(process_index, process_count)
  spe = steps_per_epoch(info, config, process_count=process_count)
  local_batch = config.batch_size // process_count
  spec, builder = _open(config)
  share = tfds_source.process_share(config.train_split, process_index, process_count, drop_remainder=True)
  if tfds_source.num_examples(builder, share) // local_batch != spe:
    raise ValueError(f'The train split of {config.dataset} in {config.data_dir} does not have the '
                     f'{info.num_train_examples} examples `info` says; was `info` made from another config?')
  if config.cache_train:
    cached = _cached_decoded(builder, spec, share)
    read_epoch = lambda files_seed: cached  # The cache fixed the file order; the buffer shuffles it all.
  else:
    read_epoch = lambda files_seed: _read_encoded(builder, share, shuffle_seed=files_seed)

  return epochs.resumable_epochs(
      lambda files_seed, shuffle_seed, augment_seed, skip_examples: _train_epoch(
          read_epoch(files_seed), spec, config, shuffle_seed=shuffle_seed, augment_seed=augment_seed,
          skip_examples=skip_examples, local_batch=local_batch),
      seed=config.seed, process_index=process_index, start_step=start_step, steps_per_epoch=spe,
      local_batch=local_batch, what='train')


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
  num_steps = -(-tfds_source.largest_share(total, process_count) // local_batch)
  share = tfds_source.process_share(split, process_index, process_count, drop_remainder=False)
  num_padding = num_steps * local_batch - tfds_source.num_examples(builder, share)

  def preprocess(example):
    image = spec.eval_preprocess(example['image'], config)
    return {'image': preprocessing.normalize(image, spec.mean, spec.std), 'label': example['label'],
            'mask': tf.constant(True)}

  ds = _read_encoded(builder, share, shuffle_seed=None).map(preprocess, num_parallel_calls=tf.data.AUTOTUNE)
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
