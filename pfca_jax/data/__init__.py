"""Input pipelines. `pipeline(config)` is the module that reads `config.dataset` for `config.task`:

    pipe = data.pipeline(config)
    info = pipe.dataset_info(config)
    train = pipe.train_iterator(config, info, start_step=step)
    batches, num_steps = pipe.eval_iterator(config, info)          # classification
    for image in pipe.eval_images(config): ...                      # super-resolution

The TFDS pipelines (classification, super_resolution) import TensorFlow, which is needed only for them:
it is imported when such a dataset is first used, and a missing one is a one-line error with the install
command. The synthetic datasets (`synthetic`) need neither TensorFlow nor any data on disk.
"""

import importlib

from pfca_jax import image_io
from pfca_jax.errors import UserError

SYNTHETIC = 'synthetic'  # config.dataset of the generated data, for either task.
_TFDS_PIPELINES = {'classification': 'pfca_jax.data.classification',
                   'super_resolution': 'pfca_jax.data.super_resolution'}
_SYNTHETIC_PIPELINES = {'classification': 'pfca_jax.data.synthetic_classification',
                        'super_resolution': 'pfca_jax.data.synthetic_super_resolution'}


def pipeline(config):
  """The module with dataset_info, steps_per_epoch, train_iterator and the evaluation readers for `config`."""
  if config.dataset == SYNTHETIC:
    return importlib.import_module(_SYNTHETIC_PIPELINES[config.task])
  try:
    return tfds_pipeline(config.task)
  except image_io.MissingTensorFlow as e:  # Which dataset wanted it (a misspelt name included).
    raise UserError(f'config.dataset={config.dataset!r}: {e}') from None


def tfds_pipeline(task: str):
  """The TFDS pipeline module of `task`, TensorFlow imported first (silenced, kept off the GPUs)."""
  image_io.import_tensorflow()
  try:
    import tensorflow_datasets  # noqa: F401
  except ImportError as e:
    raise image_io.MissingTensorFlow(e) from None
  return importlib.import_module(_TFDS_PIPELINES[task])
