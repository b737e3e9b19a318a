"""Ablation grid: a config trained once per attention and seed, then mean ± std tables and curves.

    python experiments/ablation.py --config=configs/quickstart.py --seeds=3
        [--attentions=none,pfca,se,eca,simam] [--workdir=runs/ablation/NAME] [--name=NAME]
        [--results_dir=experiments/results] [--config.FIELD=VALUE ...]

Runs go one after another, each in WORKDIR/<attention>/seed_<seed>/ through the ordinary trainer
(seeds config.seed, config.seed + 1, ...); rerunning the same command re-reads finished runs and
resumes the interrupted one; rerunning it with a changed config is refused, naming the fields. The
attentions come from --attentions only: --config.model.attention or --config.compare_attentions is
refused. Then RESULTS_DIR/NAME.md (the command, the machine, the summary table with differences to
`none`, every run, and what produced them), NAME.csv and NAME.png are written. NAME defaults to the
config file's name (with its `:ARG`, if any). Mistakes end with one line and exit status 2.
"""

import datetime
import os
import shlex
import sys

from absl import flags, logging
from ml_collections import config_flags

from pfca_jax.cli import cluster, command, cpu_settings

if __name__ == '__main__':
  cpu_settings.apply()  # Before JAX: see pfca_jax/cli/cpu_settings.py.

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Config file, e.g. configs/quickstart.py.', lock_config=True)
_SEEDS = flags.DEFINE_integer('seeds', 3, 'Seeds per attention: config.seed, config.seed + 1, ...')
_ATTENTIONS = flags.DEFINE_string('attentions', 'none,pfca,se,eca,simam', 'Comma-separated attentions.')
_WORKDIR = flags.DEFINE_string('workdir', None, 'Parent folder of the runs (default runs/ablation/NAME).')
_NAME = flags.DEFINE_string('name', None, 'Name of the results files (default: the config file name).')
_RESULTS_DIR = flags.DEFINE_string('results_dir', os.path.join(os.path.dirname(os.path.abspath(__file__)), 'results'),
                                   'Where NAME.md, NAME.csv and NAME.png go.')


def _default_name() -> str:
  """configs/quickstart.py -> quickstart; configs/quickstart.py:se -> quickstart_se."""
  path = config_flags.get_config_filename(flags.FLAGS['config'])
  given = next((a.split('=', 1)[1] for a in sys.argv if a.startswith('--config=')), '')
  return os.path.splitext(os.path.basename(path))[0] + ('_' + given.split(':', 1)[1] if ':' in given else '')


def _header(name: str, argv: list[str], runs: list[dict]) -> str:
  from pfca_jax.bench import timing
  first = runs[0]
  return '\n'.join([
      f'# Ablation: {name}',
      '',
      f'Command: `{shlex.join(["python", "experiments/ablation.py"] + argv[1:])}`',
      f'Machine: {timing.machine()}; written {datetime.date.today().isoformat()}.',
      f'Runs: {len(runs)} ({len({r["seed"] for r in runs})} seeds x {len({r["attention"] for r in runs})} attentions), '
      f'{first["steps"]} steps each; model {first["config"]["model"]["name"]}, dataset {first["config"]["dataset"]}.',
      'Table: mean ± sample standard deviation over seeds; "vs none": difference of the means ± its '
      'standard error. Train img/s is measured throughput on this machine (noisy to a few percent).',
  ])


def main(argv):
  del argv  # command.parse_flags has refused any positional argument.
  logging.set_verbosity(logging.FATAL)  # As pfca_jax.main: every failure ends in one line of ours.
  command.quiet_closed_event_loops()
  # Joined as pfca_jax.main: srun, mpirun and Cloud TPU VM pods start this same command on every host.
  with cluster.job(_CONFIG.value):
    import jax
    from pfca_jax.studies import ablation, compare
    from pfca_jax.train.checkpointing import TrainingStopped
    from pfca_jax.errors import UserError
    from pfca_jax.train.validation import check_workdir, nearest_existing
    try:
      attentions = compare.parse_attentions(_ATTENTIONS.value, '--attentions')
      for field in ('model.attention', 'compare_attentions'):  # Set per run here: an explicit value would be ignored.
        if field in config_flags.get_override_values(flags.FLAGS['config']):
          raise UserError(f'--config.{field} has no effect here: the grid trains the attentions of --attentions='
                          f'{_ATTENTIONS.value}; put the attentions there')
      name = _NAME.value or _default_name()
      # Checked, not created: a refused command (e.g. --seeds=0, refused by run_grid) leaves no folder behind.
      results_dir = os.path.abspath(_RESULTS_DIR.value)
      existing = nearest_existing(results_dir)
      if not (os.path.isdir(existing) and os.access(existing, os.W_OK | os.X_OK)):
        raise UserError(f'--results_dir={_RESULTS_DIR.value}: {existing} is not a folder this user may write in')
      workdir = check_workdir(_WORKDIR.value or os.path.join('runs', 'ablation', name))
      log = lambda s: print(s, flush=True) if jax.process_index() == 0 else None
      runs = ablation.run_grid(_CONFIG.value, workdir, attentions, _SEEDS.value, log=log)
      if jax.process_index() != 0:
        return
      paths = ablation.write_results(runs, results_dir, name, _header(name, sys.argv, runs))
    except TrainingStopped as e:
      sys.exit(e.exit_status)  # The trainer has said which checkpoint it saved and how to resume.
  print(open(paths[0]).read())
  print('Written: ' + ', '.join(paths), flush=True)


if __name__ == '__main__':
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
  # A UserError (status 2) or RunFailed (its own status) ends as one line there, as in pfca_jax.main.
  sys.exit(command.run(main, _CONFIG))
