"""Command line: `python -m pfca_jax.main --config=configs/NAME.py --workdir=DIR [--config.FIELD=VALUE ...]`.

Only parses flags, joins the processes of a multi-host run, and calls
`pfca_jax.train.train_and_evaluate` (or, when the config sets `compare_attentions`,
`pfca_jax.studies.compare.run`, which calls it once per attention). Mistakes in what was asked for end with one line on stderr
(a refused resume with one more line per differing field) and exit status 2; a run that cannot go on
(`pfca_jax.errors.RunFailed`) with one line and its status: 3 divergence, 4 a checkpoint that could not be
saved, 5 a lost process, 6 a stuck one (docs/clusters.md); a stop by SIGTERM or Ctrl-C, once its checkpoint
is saved, with 128 + the signal's number (143, 130).
"""

import os
import sys

from absl import flags, logging
from ml_collections import config_flags

from pfca_jax.cli import cluster, command, cpu_settings

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Config file, e.g. configs/cifar100_resnet56.py[:ATTENTION].',
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Folder for checkpoints, TensorBoard events and results.json.')
_DISTRIBUTED = flags.DEFINE_enum(
    'distributed', 'auto', ['auto', 'on', 'off'],
    'Join a multi-process job with jax.distributed.initialize: on; off; auto = when a launcher started several '
    'processes (srun, mpirun, a Cloud TPU VM pod) or --coordinator_address is given (docs/clusters.md).')
_COORDINATOR = flags.DEFINE_string('coordinator_address', None, 'host:port of process 0 (multi-process on CPU/GPU).')
_NUM_PROCESSES = flags.DEFINE_integer('num_processes', None, 'Number of processes (with --coordinator_address).')
_PROCESS_ID = flags.DEFINE_integer('process_id', None, 'This process\'s index (with --coordinator_address).')


def main(argv):
  del argv  # command.parse_flags has refused any positional argument.
  # Our progress goes to stdout and every failure ends in one line of ours; TFDS's info chatter and the
  # tracebacks orbax logs from its save threads before the error reaches us (disk full) do not.
  logging.set_verbosity(logging.FATAL)
  command.quiet_closed_event_loops()
  config = _CONFIG.value
  with cluster.job(config, _DISTRIBUTED.value, _COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value):
    from pfca_jax import train
    from pfca_jax.studies import compare
    from pfca_jax.train import checkpointing
    try:
      if config.get('compare_attentions'):
        compare.run(config, _WORKDIR.value, overrides=config_flags.get_override_values(flags.FLAGS['config']))
      else:
        train.train_and_evaluate(config, _WORKDIR.value)
    except checkpointing.TrainingStopped as e:
      sys.exit(e.exit_status)  # The trainer has said which checkpoint it saved and how to resume.


if __name__ == '__main__':
  cpu_settings.apply()  # Before JAX starts; each setting documented there, PFCA_JAX_CPU_SETTINGS=0 skips all.
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')  # TensorFlow only reads data here: no C++ log noise.
  # A UserError (status 2) or RunFailed (its own status) from parsing or training ends as one line there.
  cluster.leave(command.run(main, _CONFIG))
