"""absl flag parsing of the commands that take a `--config` (ml_collections config_flags): every flag or config
mistake as one UserError line, which `runner.run` prints before exiting with status 2."""

import functools
import os
import re
import sys

from absl import flags

from pfca_jax.errors import UserError

# The type of a config field, as a person would name what it takes.
_TYPE_NAMES = {bool: 'True or False', int: 'an integer', float: 'a number', str: 'a string',
               tuple: 'a tuple, e.g. (30, 60)'}


# absl's flags that print help and exit.
_HELP_FLAGS = ('help', 'helpshort', 'helpfull', 'helpxml', '?', 'h')


def one_line(error: Exception) -> str:
  """Config-file errors arrive wrapped in a traceback's text: their last line is the cause."""
  lines = [line.strip() for line in str(error).replace('\\n', '\n').splitlines() if line.strip()]
  if any(line.startswith('Traceback') for line in lines):
    lines = lines[-1:]
    # 'ValueError: unknown attention ...': the exception's class means nothing to the person who typed the value.
    lines = [re.sub(r'^(ValueError|UserError|pfca_jax\.errors\.UserError): ', '', line) for line in lines]
  return ' '.join(lines) or type(error).__name__


def _fail(message: str) -> None:
  raise UserError(message)


def _config_argument(argv) -> str | None:
  """The value of --config in argv (the last one given wins, as in absl), or None."""
  value = None
  for i, arg in enumerate(argv[1:], 1):
    if arg in ('--config', '-config') and i + 1 < len(argv):
      value = argv[i + 1]
    elif arg.startswith(('--config=', '-config=')):
      value = arg.split('=', 1)[1]
  return value


def check_config_file(argv) -> None:
  """--config names an existing Python file: config_flags would say so inside the text of a traceback."""
  value = _config_argument(argv)
  if value is None:
    return
  path = value.split(':', 1)[0]
  if not os.path.isfile(path):
    what = 'is a folder' if os.path.isdir(path) else 'does not exist'
    _fail(f'config file {path!r} {what}; --config takes a Python file of configs/, e.g. '
          '--config=configs/cifar100_resnet56.py[:ATTENTION]')
  if not path.endswith('.py'):
    _fail(f'config file {path!r} is not a Python file; --config takes a .py file of configs/, e.g. '
          '--config=configs/cifar100_resnet56.py[:ATTENTION]')


def _override_field(argv, name: str) -> str:
  """The dotted field of the --config.FIELD=VALUE whose last part is `name` ('model.nme' for 'nme')."""
  for arg in argv[1:]:
    match = re.match(r'^--?config\.([\w.]+)', arg)
    if match and match.group(1).split('.')[-1] == name:
      return match.group(1)
  return name


def _field_value(config, field: str):
  for part in field.split('.'):
    config = config[part]
  return config


def _bad_value(config_flag, field: str, value: str, reason: str) -> str:
  """'--config.batch_size=abc: batch_size takes an integer (the config has 64)', or absl's reason when the
  field cannot be looked up."""
  try:
    current = _field_value(config_flag.value, field)
  except Exception:  # noqa: BLE001 -- the config did not load: absl's own reason is all there is.
    return f'--config.{field}={value}: {reason}'
  if hasattr(current, 'keys'):  # A group of fields (config.model): set its fields one by one.
    return (f'--config.{field}={value}: {field} is a group of fields ({", ".join(sorted(current.keys()))}); '
            f'set one at a time, e.g. --config.{field}.{sorted(current.keys())[0]}=...')
  kind = _TYPE_NAMES.get(type(current), type(current).__name__)
  return f'--config.{field}={value}: {field} takes {kind} (the config has {current!r})'


def _unknown_flag(name: str, config_flag) -> str:
  """The command's own flags are those defined in the module that defines its --config."""
  own = next((found for found in flags.FLAGS.flags_by_module_dict().values()
              if any(f.name == config_flag.name for f in found)), [])
  names = ', '.join(f'--{f.name}' for f in own)
  return f'unknown flag --{name}; the flags are {names} and --config.FIELD=VALUE (--helpfull lists them all)'


def parse_flags(argv, config_flag):
  """absl's parser for a command with a required `--config` (config_flags), as `app.run`'s flags_parser.

  Positional arguments are refused too: every command that uses this takes flags only.
  """
  check_config_file(argv)
  try:
    try:
      rest = flags.FLAGS(argv)
    except SystemExit as e:  # absl ends --help with status 1; help that was asked for is a success.
      if e.code == 1 and any(arg.lstrip('-') in _HELP_FLAGS for arg in argv[1:]):
        sys.exit(0)
      raise
    if config_flag.value is None:
      _fail('--config is required, e.g. --config=configs/cifar100_resnet56.py')
    config_flag.value.get('task')  # A config file that failed to load raises only when first used.
  except UserError:
    raise
  except flags.UnrecognizedFlagError as e:
    _fail(_unknown_flag(e.flagname, config_flag))
  except flags.IllegalFlagValueError as e:
    match = re.match(r'^flag --config\.([\w.]+)=(.*?): (.*)$', str(e), re.S)
    _fail(_bad_value(config_flag, match.group(1), match.group(2), match.group(3)) if match else one_line(e))
  except (KeyError, AttributeError) as e:  # An unknown --config.FIELD.
    name = (re.findall(r'\w+', str(e))[:1] or ['?'])[0]
    hint = re.search(r'Did you mean "(\w+)"', str(e))
    field = _override_field(argv, name)
    suggestion = f'{field.rsplit(".", 1)[0]}.{hint.group(1)}' if hint and '.' in field else hint and hint.group(1)
    _fail(f'unknown config field {field!r}' + (f'; did you mean {suggestion!r}?' if hint else
                                                '; every field is commented in pfca_jax/train/config_defaults.py'))
  except Exception as e:  # noqa: BLE001 -- config-file errors (a bad :ATTENTION, a file that does not load).
    _fail(one_line(e))
  if len(rest) > 1:
    _fail(f'unexpected argument {rest[1]!r}: this command takes flags only, e.g. --config=FILE.py[:ATTENTION] '
          '--workdir=DIR --config.FIELD=VALUE')
  return rest


def run(main, config_flag) -> int:
  """absl's app.run(main) with these flags, its mistakes and failures ended by runner.run as every command's are."""
  from absl import app
  from pfca_jax.cli import runner
  return runner.run(lambda argv: app.run(main, argv, flags_parser=functools.partial(parse_flags,
                                                                                     config_flag=config_flag)))


def quiet_closed_event_loops() -> None:
  """Drops the 'Event loop is closed' reports of an orbax read or write that failed (a command's choice).

  When one write of an asynchronous save fails (disk full), or one read of a damaged checkpoint,
  orbax's event loop for it closes while TensorStore's other operations are still finishing; each then
  reports, from a C++ thread through sys.unraisablehook, that it could not call back into the closed
  loop. The failure itself reaches the command and is said in one line; every other report goes to
  the previous hook.
  """
  previous = sys.unraisablehook

  def hook(unraisable):
    error = unraisable.exc_value
    if not (isinstance(error, RuntimeError) and str(error) == 'Event loop is closed'):
      previous(unraisable)

  sys.unraisablehook = hook
