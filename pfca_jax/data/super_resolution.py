"""Super-resolution input pipelines: DIV2K (or skimage's photos) as TFDS data, benchmark folders.

    info = dataset_info(config)
    train = train_iterator(config, info, start_step=step)   # infinite, resumable, {'lr', 'hr'} patches
    for pair in eval_images(config): ...                    # full DIV2K validation images, uint8
    for pair in folder_images(hr_dir, scale, downscale=imresize): ...   # Set5, Set14, ...

The training pipeline follows the classification one (pfca_jax.data.classification)
and shares its determinism design: every epoch's order and every example's
augmentation come from stateless seeds of (config.seed, epoch, process_index,
position in the epoch), so a resumed run yields bit-identical batches.
"""

from typing import Callable, Iterator

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from pfca_jax.data import SYNTHETIC, epochs, file_order, skimage_photos, tfds_source
from pfca_jax.data.metadata import SRInfo, check_sr_config
from pfca_jax.data.metadata import sr_steps_per_epoch as steps_per_epoch  # noqa: F401 (this module's interface)
from pfca_jax.data.sr_folders import crop_pair, folder_images, mod_crop  # noqa: F401 (re-exported)
from pfca_jax.errors import UserError

Batch = dict[str, np.ndarray]

PREPARE_HINT = ('Prepare it with `tfds build div2k/bicubic_x{scale} --data_dir={{data_dir}}` on a machine with '
                'network (about 4 GB of downloads per scale), or copy a prepared div2k/ folder into {{data_dir}}.')


# Datasets of (LR, HR) pairs with DIV2K's features: None for data prepared beforehand with `tfds build`,
# else the builder that prepares it offline from an installed package on first use.
DATASETS = {'div2k': None, skimage_photos.NAME: skimage_photos.SkimagePhotos}


def _check_config(config) -> None:
  if config.dataset not in DATASETS:
    raise UserError(f"Unknown super-resolution dataset {config.dataset!r}; supported datasets: "
                    f"{', '.join([*DATASETS, SYNTHETIC])}")
  check_sr_config(config)


def tfds_name(scale: int) -> str:
  return f'div2k/bicubic_x{scale}'


def _open(config) -> tfds.core.DatasetBuilder:
  _check_config(config)
  if DATASETS[config.dataset] is not None:
    return tfds_source.open_local_builder(DATASETS[config.dataset], config.data_dir,
                                          config=f'bicubic_x{config.scale}')
  return tfds_source.open_builder(tfds_name(config.scale), config.data_dir,
                                  PREPARE_HINT.format(scale=config.scale))


def dataset_info(config) -> SRInfo:
  """Sizes of the DIV2K train split and of the patches, from the prepared data's metadata only.

  Raises:
    UserError: bad dataset, scale, patch size or split.
    DatasetNotFoundError: div2k/bicubic_x{scale} is not prepared in config.data_dir.
  """
  builder = _open(config)
  return SRInfo(num_train_examples=tfds_source.num_examples(builder, config.train_split), scale=config.scale,
                lr_patch=config.hr_patch_size // config.scale, hr_patch=config.hr_patch_size)


_ENCODED = {'lr': tfds.decode.SkipDecoding(), 'hr': tfds.decode.SkipDecoding()}


def _read_pairs(builder, split) -> tf.data.Dataset:
  """{'lr', 'hr'} still PNG-encoded, in TFDS's order (evaluation, where the order is the set's)."""
  read_config = tfds.ReadConfig(try_autocache=False, options=epochs.read_options())
  return builder.as_dataset(split=split, shuffle_files=False, read_config=read_config, decoders=_ENCODED)


def _read_passes(builder, split, files, num_examples: int, passes: int, position: int) -> tf.data.Dataset:
  """`passes` reads of `files` (file_order instructions) one after the other, encoded, from example `position` on."""
  first_pass, offset = divmod(position, num_examples)
  read = lambda start: file_order.read_in_order(builder, split, files, decoders=_ENCODED,
                                                options=epochs.read_options(), position=start)
  return read(offset).concatenate(read(0).repeat(passes - first_pass - 1))


def _decode(pair):
  decoded = {key: tf.io.decode_png(pair[key], channels=3) if pair[key].dtype == tf.string else pair[key]
             for key in ('lr', 'hr')}
  if 'name' in pair:  # skimage_photos stores names; DIV2K does not.
    decoded['name'] = pair['name']
  return decoded


def _cached_decoded(builder, split, files, num_examples: int) -> tf.data.Dataset:
  """The split's pairs decoded to uint8, in the order of `files`, cached in memory when first read in full.

  Memory: the whole share of decoded pairs. DIV2K's 800 train HR images are
  about 6.2 GB as uint8, plus HR / scale^2 for LR: ~6.6 GB at x4, ~6.9 GB at
  x3, ~7.8 GB at x2 (divided by the process count). Every epoch is built on the
  returned object, so PNGs are decoded once per run; shuffle windows then hold
  references to the cached tensors, not copies.
  """
  return _read_passes(builder, split, files, num_examples, 1, 0).map(_decode,
                                                                     num_parallel_calls=tf.data.AUTOTUNE).cache()


def random_patch_pair(lr: tf.Tensor, hr: tf.Tensor, seed: tf.Tensor, *, scale: int, lr_patch: int
                      ) -> tuple[tf.Tensor, tf.Tensor]:
  """Aligned random LR/HR patches with the same random flips and transpose, uint8.

  The position is drawn on the LR grid and multiplied by the scale for HR, so
  the HR patch covers exactly the LR patch's area (what BasicSR's
  paired_random_crop does). Then horizontal flip, vertical flip and transpose,
  each with probability 1/2 and the same draw for both images: together they
  give the 8 symmetries of the square (flips and 90-degree rotations).
  """
  top_seed, left_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 3))
  lr_shape = tf.shape(lr)
  tf.debugging.assert_greater_equal(
      tf.shape(hr)[:2], lr_shape[:2] * scale, message='DIV2K HR image smaller than scale x its LR image')
  tf.debugging.assert_greater_equal(lr_shape[:2], lr_patch, message='DIV2K LR image smaller than the LR patch')
  # Uniform over the valid positions [0, side - patch] of each axis.
  top, left = (tf.random.stateless_uniform([], axis_seed, minval=0, maxval=lr_shape[axis] - lr_patch + 1,
                                           dtype=tf.int32)
               for axis, axis_seed in enumerate((top_seed, left_seed)))
  lr = tf.slice(lr, [top, left, 0], [lr_patch, lr_patch, 3])
  hr_patch = lr_patch * scale
  hr = tf.slice(hr, [top * scale, left * scale, 0], [hr_patch, hr_patch, 3])
  flips = tf.random.stateless_uniform([3], flip_seed) < 0.5

  def augment(image):
    image = tf.cond(flips[0], lambda: tf.reverse(image, [1]), lambda: image)
    image = tf.cond(flips[1], lambda: tf.reverse(image, [0]), lambda: image)
    return tf.cond(flips[2], lambda: tf.transpose(image, [1, 0, 2]), lambda: image)

  return augment(lr), augment(hr)


def _train_epoch(read_from: Callable[[int], tf.data.Dataset], num_examples: int, config, info: SRInfo, *,
                 from_cache: bool, shuffle_seed: int, augment_seed: np.ndarray, skip_examples: int,
                 local_batch: int) -> tf.data.Dataset:
  """Shuffled patch batches of one epoch (patches_per_image passes), from example `skip_examples` on.

  read_from(p) is the epoch's sequence of pairs from its p-th on; windows of
  config.shuffle_buffer_size consecutive ones are shuffled (file_order.windowed_shuffle), so a
  resumed epoch reads at most one file and one window before its first batch. From the cache the
  next window is gathered while one is used (references into the cache); read from the files,
  one window at a time (DIV2K's encoded pairs are ~4.5 MB each). Example i of the epoch is cropped and
  augmented with fold_in(augment_seed, i), so the pixels do not depend on parallelism or on
  where the run resumed. Pairs are decoded after the skip (unless they come from the cache).
  """
  ds = file_order.windowed_shuffle(read_from, num_examples=num_examples, window=config.shuffle_buffer_size,
                                   shuffle_seed=shuffle_seed, start=skip_examples, read_ahead=from_cache)
  augment_seed = tf.constant(augment_seed)

  def preprocess(index, pair):
    pair = _decode(pair)
    seed = tf.random.experimental.stateless_fold_in(augment_seed, index)
    lr, hr = random_patch_pair(pair['lr'], pair['hr'], seed, scale=info.scale, lr_patch=info.lr_patch)
    return {'lr': tf.cast(lr, tf.float32) / 255.0, 'hr': tf.cast(hr, tf.float32) / 255.0}

  ds = ds.map(preprocess, num_parallel_calls=tf.data.AUTOTUNE)
  ds = ds.batch(local_batch, drop_remainder=True)
  return ds.prefetch(tf.data.AUTOTUNE).with_options(epochs.read_options())


def train_iterator(config, info: SRInfo, start_step: int = 0, *, process_index: int | None = None,
                   process_count: int | None = None) -> Iterator[Batch]:
  """Infinite per-process batches {'lr': float32 (B, lp, lp, 3), 'hr': float32 (B, hp, hp, 3)} in [0, 1].

  B = config.batch_size // process_count. Epoch e covers this process's share
  of the train split (N // process_count images) config.patches_per_image
  times, in an order that depends only on (config.seed, e, process_index): file
  order and shuffle windows are seeded from them (with config.cache_train the
  file order is the cached one and only the windows shuffle). Each epoch yields
  exactly steps_per_epoch batches; the last incomplete one is dropped.

  Batch k of this iterator is bit-identical to batch start_step + k of one
  started at step 0. It resumes at epoch start_step // steps_per_epoch, example
  (start_step % steps_per_epoch) * B, reading at most one file and one shuffle
  window before its first batch, wherever that is in the epoch (as the
  classification pipeline, pfca_jax/data/file_order.py); with config.cache_train
  a resumed partial epoch is read from the files and the next epoch fills the cache.

  Shuffle window memory: without the cache it holds encoded PNG pairs, ~4.5 MB
  each for DIV2K (so config.shuffle_buffer_size of 800 is ~3.6 GB); with it,
  references into the cache.
  """
  process_index, process_count = epochs.process_index_count(process_index, process_count)
  spe = steps_per_epoch(info, config, process_count=process_count)
  local_batch = config.batch_size // process_count
  builder = _open(config)
  if (info.scale, info.hr_patch) != (config.scale, config.hr_patch_size):
    raise ValueError(f'info {info} was not made from this config (scale {config.scale}, '
                     f'hr_patch_size {config.hr_patch_size})')
  share = tfds_source.process_share(config.train_split, process_index, process_count, drop_remainder=True)
  if tfds_source.num_examples(builder, share) != info.num_train_examples // process_count:
    raise ValueError(f'The train split of div2k in {config.data_dir} does not have the {info.num_train_examples} '
                     'examples `info` says; was `info` made from another config?')
  num_share = info.num_train_examples // process_count
  files = file_order.file_instructions(builder, share)
  passes = config.patches_per_image
  cached = _cached_decoded(builder, share, files, num_share) if config.cache_train else None

  def build_epoch(files_seed, shuffle_seed, augment_seed, skip_examples):
    from_cache = cached is not None and skip_examples == 0
    if from_cache:
      read_from = lambda position: cached.repeat(passes)  # The cache fixed the file order; windows shuffle.
    else:  # A resumed partial epoch with the cache reads the cache's order from the files.
      epoch_files = files if files is None or cached is not None else file_order.ordered(files, files_seed)
      read_from = lambda position: _read_passes(builder, share, epoch_files, num_share, passes, position)
    return _train_epoch(read_from, num_share * passes, config, info, from_cache=from_cache, shuffle_seed=shuffle_seed,
                        augment_seed=augment_seed, skip_examples=skip_examples, local_batch=local_batch)

  return epochs.resumable_epochs(build_epoch, seed=config.seed, process_index=process_index,
                                 start_step=start_step, steps_per_epoch=spe, local_batch=local_batch,
                                 what='div2k train')


def eval_images(config, split: str | None = None, *, max_images: int = -1, process_index: int | None = None,
                process_count: int | None = None) -> Iterator[dict]:
  """This process's share of full images {'lr': uint8 HxWx3, 'hr': uint8 (sH)x(sW)x3, 'name': str, 'index': int}.

  split defaults to config.eval_split; max_images >= 0 keeps only its first
  max_images images (in the stored order), before sharing, so the images scored
  do not depend on the process count. The split is shared without drop (the
  first N % process_count processes get one more image) so together the
  processes see each image once; images have different sizes, so they are
  not batched. HR is mod-cropped to a multiple of the scale and LR cropped to
  HR / scale. 'index' counts in the split's stored order across all
  processes. TFDS's div2k stores no file names, so 'name' is
  '{split}_{index:04d}'; datasets that store names (skimage_photos) keep theirs.
  """
  process_index, process_count = epochs.process_index_count(process_index, process_count)
  split = config.eval_split if split is None else split
  builder = _open(config)
  size = tfds_source.num_examples(builder, split)  # A one-line UserError naming the valid splits if it is unknown.
  if max_images == 0:
    return iter(())
  # TFDS refuses a slice past the split's end.
  kept = split if not 0 < max_images < size else f'{split}[:{max_images}]'
  share = tfds_source.process_share(kept, process_index, process_count, drop_remainder=False)
  # Shares are contiguous, so this one starts after the sizes of the earlier ones.
  first = sum(tfds_source.num_examples(builder, tfds_source.process_share(kept, i, process_count,
                                                                          drop_remainder=False))
              for i in range(process_index))
  ds = _read_pairs(builder, share).map(_decode, num_parallel_calls=tf.data.AUTOTUNE)
  ds = ds.prefetch(2).with_options(epochs.read_options())
  # A generator of its own, so that a missing dataset or bad split fails at the call, not at the first image.
  return (dict(crop_pair(pair['lr'], pair['hr'], config.scale,
                         pair['name'].decode() if 'name' in pair else f'{split}_{index:04d}'), index=index)
          for index, pair in enumerate(ds.as_numpy_iterator(), start=first))
