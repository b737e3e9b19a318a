"""What the trainer asks of a task, and what every task shares: the data pipeline and the model of its config.

`train_and_evaluate` calls, in this order: the constructor (the config's names and options, before any
data is read), `open_data`, then `model`, `input_shape`, `steps_per_epoch`, `train_batches`, `loss`,
`build_eval` and `evaluate`, and last `results_extra` for results.json. A task subclasses `Task` and
supplies its abstract methods (a subclass missing one cannot be instantiated).
"""

import abc

from pfca_jax import data
from pfca_jax.models.from_config import create_model


class Task(abc.ABC):
  """One kind of training (classification, super-resolution): its data, model, loss and evaluation."""
  input_key = 'image'  # The batch entry the network reads.

  def __init__(self, config, **model_options):
    """Builds the config's model once, so that a bad name or option is refused before any data access."""
    self.config = config
    self.model = create_model(config, **model_options)

  def open_data(self) -> None:
    """Reads the dataset's metadata (a one-line UserError when it is not prepared or damaged)."""
    self.data = data.pipeline(self.config)
    self.info = self.data.dataset_info(self.config)

  def steps_per_epoch(self) -> int:
    return self.data.steps_per_epoch(self.info, self.config)

  def train_batches(self, start_step: int):
    """The training batches from `start_step` on, as if the run had never stopped."""
    return self.data.train_iterator(self.config, self.info, start_step=start_step)

  @abc.abstractmethod
  def input_shape(self) -> tuple:
    """The shape of one input example with a batch of 1, for initialising the model."""

  @abc.abstractmethod
  def loss(self, outputs, batch):
    """(loss, {name: metric}) of one training batch."""

  @abc.abstractmethod
  def build_eval(self, state_shardings, mesh) -> None:
    """Prepares evaluation once the state's placement is known."""

  @abc.abstractmethod
  def evaluate(self, state, step: int, reporter, stop=None) -> dict:
    """{'eval/<set>/<metric>': value}; `stop` is asked between batches and True raises steps.EvaluationStopped."""

  def results_extra(self) -> dict:
    """Entries the task adds to results.json beside the metrics (none by default)."""
    return {}
