"""What a run tells its user: console lines, a progress bar, TensorBoard scalars, metrics.jsonl, results.json.

Train metrics stay on the device until a log step, so the host never waits on the step it just
launched; they are then fetched together, checked for NaN/Inf (naming the first bad step) and
averaged. Every scalar goes to TensorBoard's event file (written by tensorboardX, which needs no
TensorFlow) and to WORKDIR/metrics.jsonl, one JSON object per write ({"step": S, "train/loss": ...}),
which `pfca_jax.plot` and the experiment scripts read. Only process 0 prints and writes files.
"""

import json
import math
import os
import sys
import time

import jax
import numpy as np

from pfca_jax.errors import RunFailed
from pfca_jax.train import metrics_log, progress


# tensorboardX writes events from a thread and flushes them this often: a run killed without warning
# loses at most these seconds of TensorBoard events (metrics.jsonl has them), a stopped run none.
FLUSH_SECONDS = 5


def summary_writer(logdir: str):
  """A tensorboardX writer of a new event file in LOGDIR, flushed every FLUSH_SECONDS and on close."""
  tensorboardx = _import_tensorboardx()
  # tensorboardX names its files by the second: the suffix keeps two writers of one second apart.
  return tensorboardx.SummaryWriter(logdir, flush_secs=FLUSH_SECONDS, filename_suffix=f'.{time.time_ns()}')


def _import_tensorboardx():
  """tensorboardX without the torch it imports, when installed, only to accept torch tensors: that import
  costs seconds at every start (experiments/results/tensorboard_writer.md). A torch already imported stays."""
  if 'torch' in sys.modules:
    import tensorboardX
    return tensorboardX
  sys.modules['torch'] = None  # `import torch` raises ImportError, as where torch is not installed.
  try:
    import tensorboardX
  finally:
    del sys.modules['torch']
  return tensorboardX


class TrainingDiverged(RunFailed):
  """The loss, the gradient norm or the state to be saved was not finite, first at `step`."""
  exit_status = 3

  def __init__(self, message: str, step: int):
    super().__init__(message)
    self.step = step


class Reporter:

  def __init__(self, workdir: str, total_steps: int, global_batch: int, start_step: int):
    self.is_main = jax.process_index() == 0
    self.workdir = workdir
    self.tensorboard = summary_writer(workdir) if self.is_main else None
    self.total_steps = total_steps
    self.global_batch = global_batch
    self._pending = []
    self._last_step = start_step
    self.images_per_sec = float('nan')
    self.rates = []  # images/s of each log interval, the first one (the first executions) included.
    # On a terminal, a bar over the steps; elsewhere the log lines below are the progress.
    self.progress = progress.Progress(total_steps, 'train', 'step', initial=start_step, interval=None,
                                      enabled=self.is_main)
    self._jsonl = os.path.join(workdir, 'metrics.jsonl')
    if self.is_main:  # A killed run may have torn its last line: end it, so ours start on a line of their own.
      metrics_log.repair_tail(self._jsonl)

  def print(self, text: str) -> None:
    if self.is_main:
      self.progress.write(text)

  def write_scalars(self, step: int, scalars: dict) -> None:
    """To TensorBoard and to WORKDIR/metrics.jsonl."""
    if self.is_main:
      for tag, value in scalars.items():
        self.tensorboard.add_scalar(tag, float(value), step)
      metrics_log.append(self._jsonl, step, scalars)

  def write_config(self, step: int, config) -> None:
    """The whole config as TensorBoard text (tag 'config/text_summary', as tensorboardX names it)."""
    if self.is_main:
      text = json.dumps(config.to_dict(), indent=2, sort_keys=True, default=str)
      # Indented four spaces: TensorBoard renders text as markdown, and this keeps the JSON a code block.
      self.tensorboard.add_text('config', '\n'.join('    ' + line for line in text.splitlines()), step)

  def add_train(self, step: int, metrics) -> None:
    """Keeps a step's metrics (device arrays) until the next `flush_train`."""
    self._pending.append((step, metrics))
    self.progress.update(1)

  def train_images_per_sec(self) -> float | None:
    """Median training throughput over the log intervals after the first (whose steps run for the first time)."""
    rates = self.rates[1:] or self.rates
    return float(np.median(rates)) if rates else None

  def check_finite(self) -> list:
    """Fetches the pending metrics; raises TrainingDiverged at the first non-finite loss or grad norm."""
    fetched = jax.device_get(self._pending)
    for step, metrics in fetched:
      for name in ('loss', 'grad_norm'):
        value = float(metrics[name])
        if not math.isfinite(value):
          raise TrainingDiverged(f'{name} is {value} at step {step}: training stopped', step)
    return fetched

  def fetch_train(self) -> list:
    """The pending metrics, fetched (the host waits here for the steps to run) and checked; then forgotten."""
    fetched = self.check_finite()
    self._pending = []
    return fetched

  def write_train(self, step: int, fetched: list, lap: dict) -> dict:
    """Averages fetched metrics, writes train/* scalars, prints one line.

    lap: seconds per `time_breakdown` category since the last log line. Images/s and the ETA count the
    time spent training: the steps and the waits for input (compilation, evaluations, checkpoint saves
    and logging left out); `input N%` is the share of that time the device waited for input.
    """
    if not fetched:
      return {}
    elapsed = lap['train_step'] + lap['input']
    steps = step - self._last_step
    self.images_per_sec = steps * self.global_batch / elapsed if elapsed > 0 else float('nan')
    if math.isfinite(self.images_per_sec):
      self.rates.append(self.images_per_sec)
    self._last_step = step
    input_share = lap['input'] / elapsed if elapsed > 0 else 0.0
    means = {k: float(np.mean([m[k] for _, m in fetched])) for k in fetched[0][1]}
    scalars = {f'train/{k}': v for k, v in means.items()}
    scalars['train/images_per_sec'] = self.images_per_sec
    scalars['train/input_wait_share'] = input_share
    self.write_scalars(step, scalars)
    eta = (self.total_steps - step) * elapsed / steps if steps else 0.0
    task_metrics = ''.join(f' | {"acc" if k == "accuracy" else k} {v:.4f}' for k, v in means.items()
                           if k not in ('loss', 'lr', 'grad_norm'))
    self.print(f'step {step}/{self.total_steps} | loss {means["loss"]:.4f}{task_metrics} | lr {means["lr"]:.3g} '
               f'| {self.images_per_sec:,.1f} img/s | input {100 * input_share:.0f}% | ETA {progress.duration(eta)}')
    return means

  def write_eval(self, step: int, split: str, metrics: dict, seconds: float) -> None:
    self.write_scalars(step, {f'eval/{split}/{k}': v for k, v in metrics.items()})
    shown = ' | '.join(f'{k} {v:.4f}' if isinstance(v, float) else f'{k} {v}' for k, v in metrics.items())
    self.print(f'eval {split} at step {step}: {shown} ({seconds:.1f} s)')

  def write_image(self, step: int, name: str, image: np.ndarray) -> None:
    """A uint8 HxWx3 image to TensorBoard and to WORKDIR/<name>_step<step>.png."""
    if not self.is_main:
      return
    self.tensorboard.add_image(name, np.asarray(image, np.uint8), step, dataformats='HWC')
    path = os.path.join(self.workdir, f'{name}_step{step}.png')
    os.makedirs(os.path.dirname(path), exist_ok=True)
    from PIL import Image  # Only evaluation that writes samples needs it.
    Image.fromarray(image).save(path)

  def close(self) -> None:
    self.progress.close()
    if self.is_main:
      self.tensorboard.close()  # Writes what the thread still holds: a stopped or failed run keeps its logs.


def write_json(workdir: str, name: str, content: dict) -> None:
  """WORKDIR/name, written to a temporary file and renamed so a reader never sees half of it."""
  if jax.process_index() != 0:
    return
  path = os.path.join(workdir, name)
  tmp = path + '.tmp'
  with open(tmp, 'w') as f:
    json.dump(content, f, indent=2, sort_keys=True, default=_jsonable)
  os.replace(tmp, path)


def _jsonable(value):
  if isinstance(value, (np.generic,)):
    return value.item()
  if isinstance(value, tuple):
    return list(value)
  return str(value)

