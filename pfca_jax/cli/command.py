"""absl flag parsing shared by the command lines: every flag or config mistake in one line, exit status 2."""

import os
import re
import sys

from absl import flags


def one_line(error: Exception) -> str:
  """Config-file errors arrive wrapped in a traceback's text: their last line is the cause."""
  lines = [line.strip() for line in str(error).replace('\\n', '\n').splitlines() if line.strip()]
  if any(line.startswith('Traceback') for line in lines):
    lines = lines[-1:]
  return ' '.join(lines) or type(error).__name__


def parse_flags(argv, config_flag):
  """absl's parser for a command with a required `--config` (config_flags), as `app.run`'s flags_parser."""
  try:
    argv = flags.FLAGS(argv)
    if config_flag.value is None:
      print('error: --config is required, e.g. --config=configs/cifar100_resnet56.py', file=sys.stderr)
      sys.exit(2)
    config_flag.value.get('task')  # A config file that failed to load raises only when first used.
    return argv
  except (KeyError, AttributeError) as e:  # An unknown --config.FIELD.
    field = re.findall(r"\w+", str(e))[:1] or ['?']
    hint = re.search(r'Did you mean "(\w+)"', str(e))
    print(f"error: unknown config field {field[0]!r}" + (f"; did you mean {hint.group(1)!r}?" if hint else ''),
          file=sys.stderr)
  except Exception as e:  # noqa: BLE001 -- flags.Error and config-file errors alike.
    print(f'error: {one_line(e)}', file=sys.stderr)
  sys.exit(2)


def join_processes(mode: str = 'auto', coordinator: str | None = None, num_processes: int | None = None,
                   process_id: int | None = None) -> None:
  """jax.distributed.initialize when asked ('on') or, for 'auto', on multi-host Cloud TPU VMs or with a coordinator."""
  import jax  # Only to join: no computation may run before jax.distributed.initialize.
  multi_host_tpu = ',' in os.environ.get('TPU_WORKER_HOSTNAMES', '')
  if mode == 'on' or (mode == 'auto' and (multi_host_tpu or coordinator)):
    jax.distributed.initialize(coordinator_address=coordinator, num_processes=num_processes, process_id=process_id)
