"""Train one config once per attention (and seed): the driver behind `compare_attentions` and experiments/ablation.py.

Each run is the ordinary trainer (`loop.train_and_evaluate`) in its own folder, WORKDIR/<attention>/
or, with seeds, WORKDIR/<attention>/seed_<seed>/. Before any run trains, every run's config is built
and checked: names and options, and against the checkpoint already in its folder exactly as a resume
is (`run_identity`), so a mistake or a changed config is refused in seconds, naming the fields, and
never after half the grid has trained. Rerunning the same command re-reads finished runs (nothing is
compiled), resumes an interrupted one and trains the rest.
"""

import dataclasses
import json
import os

import jax
import ml_collections

from pfca_jax.train import loop
from pfca_jax.train import run_identity
from pfca_jax.models import summary
from pfca_jax.train.validation import check_workdir


@dataclasses.dataclass
class Run:
  attention: str
  seed: int | None  # None: the config's own seed, and no seed_<seed> folder.
  config: ml_collections.ConfigDict
  workdir: str

  @property
  def label(self) -> str:
    return self.attention if self.seed is None else f'{self.attention}, seed {self.seed}'


def run_dir(workdir: str, attention: str, seed: int | None = None) -> str:
  return os.path.join(workdir, attention) if seed is None else os.path.join(workdir, attention, f'seed_{seed}')


def run_config(config: ml_collections.ConfigDict, attention: str, seed: int | None = None) -> ml_collections.ConfigDict:
  """`config` for one run: its attention (and seed), and no comparison of its own."""
  one = config.copy_and_resolve_references()
  one.model.attention = attention
  if attention == 'none':  # The baseline has no options: those given are for the attentions compared with it.
    one.model.attention_options = ''
  if seed is not None:
    one.seed = seed
  one.compare_attentions = ''
  return one


def plan(config, workdir: str, attentions: list[str], seeds: list[int] | None = None) -> list[Run]:
  """The runs of the grid, seed by seed (so a grid stopped half-way already holds whole comparisons)."""
  return [Run(attention, seed, run_config(config, attention, seed), run_dir(workdir, attention, seed))
          for seed in (seeds or [None]) for attention in attentions]


def finished_results(run: Run, latest: tuple[int, dict] | None) -> dict | None:
  """The run's results.json when the run is done for this config: written at the latest checkpoint's step
  (not by an earlier, shorter session) and for the same length. Anything else is for the trainer."""
  path = os.path.join(run.workdir, 'results.json')
  if latest is None or not os.path.isfile(path):
    return None
  with open(path) as f:
    results = json.load(f)
  length = {k: run.config.get(k) for k in run_identity.LENGTH_FIELDS}
  if results.get('status', 'completed') != 'completed':  # A diverged run's record: the trainer reports it again.
    return None
  if results.get('steps') != latest[0] or {k: results['config'].get(k) for k in length} != length:
    return None
  return results


def cost(config) -> dict:
  """Parameters and forward FLOPs of one example at the training input size (no data is read)."""
  task = loop.TASKS[config.task](config)
  task.open_data()
  shape = task.input_shape()
  return dict(summary.summarize(task.model, shape), input=f'{shape[1]}x{shape[2]}')


def _print_on_main(text: str) -> None:
  if jax.process_index() == 0:
    print(text, flush=True)


def train_each(config, workdir: str, attentions: list[str], seeds: list[int] | None = None,
               log=_print_on_main) -> list[dict]:
  """Trains (or re-reads) every run; returns one dict per run: its results.json plus attention, seed,
  label, workdir and cost (parameters and FLOPs)."""
  workdir = check_workdir(workdir)
  runs = plan(config, workdir, attentions, seeds)
  checked = []
  for run in runs:  # Everything that can be refused, for every run, before the first one trains.
    loop.check_config(run.config)
    latest, _ = run_identity.check_against_checkpoint(run.config, run.workdir)
    checked.append(latest)
  rows, costs = [], {}
  for i, (run, latest) in enumerate(zip(runs, checked)):
    results = finished_results(run, latest)
    state = 'finished, re-read' if results else 'resuming' if latest else 'training'
    log(f'== run {i + 1}/{len(runs)}: attention {run.label} -> {run.workdir} ({state})')
    if results is None:
      loop.train_and_evaluate(run.config, run.workdir)
      with open(os.path.join(run.workdir, 'results.json')) as f:
        results = json.load(f)
    if run.attention not in costs:
      costs[run.attention] = cost(run.config)
    rows.append(dict(results, attention=run.attention, seed=run.seed, label=run.label, workdir=run.workdir,
                     cost=costs[run.attention]))
  return rows
