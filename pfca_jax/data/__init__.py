"""Input pipelines. Importing this package imports TensorFlow and hides the GPUs from it.

    info = data.dataset_info(config)
    train = data.train_iterator(config, info, start_step=step)
    batches, num_steps = data.eval_iterator(config, info)
"""

from pfca_jax.data.tfds_source import DatasetNotFoundError  # First: hides GPUs before TF runs anything.
from pfca_jax.data.classification import (DATASETS, DatasetInfo, DatasetSpec, dataset_info, eval_dataset,
                                          eval_iterator, get_spec, steps_per_epoch, train_iterator)
