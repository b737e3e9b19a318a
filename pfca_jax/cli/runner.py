"""The one way every command parses its flags and ends: a mistake is one `error: ...` line and exit status 2.

    def main(argv=None) -> int:
      return runner.run(_plot, argv)      # 0, or 2 after one `error: ...` line

    def _plot(argv):
      parser = runner.Parser('python -m pfca_jax.plot', 'Training curves of runs.',
                             renamed={'--workdir': 'use --workdirs=DIR[,DIR...]'})
      parser.add_argument('--workdirs', help='...')
      args = parser.parse_args(argv)      # a mistake raises UserError
      ...

`Parser` is argparse's, with its mistakes raised as `UserError` (argparse's default prints a usage dump),
abbreviations refused (`--out` is never `--o`), an unknown flag named together with the command's own
flags, and removed spellings refused in one line naming the new one. `run` turns the errors of
`pfca_jax.errors` into one line and their exit status, whichever path a command took.
`pfca_jax.main`'s absl flags (`--config.FIELD=VALUE`) are parsed by `command.parse_flags` and end here too.
"""

import argparse
import re
import sys

from pfca_jax.errors import RunFailed, UserError


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
  """Help that shows flags as they are typed, `--name=VALUE` (argparse writes `--name VALUE`)."""

  def _format_action_invocation(self, action):
    if not action.option_strings or action.nargs == 0:
      return super()._format_action_invocation(action)
    return ', '.join(f'{name}={self._format_args(action, self._get_default_metavar_for_optional(action))}'
                     for name in action.option_strings)

  def _format_usage(self, usage, actions, groups, prefix):
    return re.sub(r'(--\w+)\s+(?=[A-Z{])', r'\1=', super()._format_usage(usage, actions, groups, prefix))


class Parser(argparse.ArgumentParser):
  """argparse with every mistake as one UserError line.

  renamed: {removed spelling: what to write instead}; a flag (`--from-torch`, matched with or without
  `=VALUE`) or the word 'positional' (any argument that is not a flag, where the command takes flags only).
  """

  def __init__(self, prog: str | None = None, description: str | None = None, renamed: dict[str, str] | None = None,
               **options):
    options.setdefault('formatter_class', _HelpFormatter)
    super().__init__(prog=prog, description=description, allow_abbrev=False, **options)
    self.renamed = dict(renamed or {})

  def error(self, message: str):
    raise UserError(f'{message} (see {self.prog} --help)')

  def add_subcommands(self, **options):
    """argparse's subparsers (`args.command` is the one given), each a Parser too: its mistakes are one line."""
    return self.add_subparsers(dest='command', required=True, metavar='COMMAND', parser_class=Parser,
                               **options)

  def flag_names(self) -> list[str]:
    return [name for action in self._actions for name in action.option_strings
            if name.startswith('--') and name != '--help']

  def _refuse_renamed(self, args: list[str]) -> None:
    for arg in args:
      if arg == '--':
        return
      name = arg.split('=', 1)[0]
      if name.startswith('-') and name in self.renamed:
        raise UserError(f'{name} is not a flag of {self.prog} any more: {self.renamed[name]}')

  def parse_args(self, args=None, namespace=None):
    args = list(sys.argv[1:] if args is None else args)
    # Before argparse's own complaints (a missing required flag), which would hide the misspelt one.
    self._refuse_renamed(args)
    self._refuse_unknown(args)
    known, extra = self.parse_known_args(args, namespace)
    if extra:
      parser = self._subcommands().get(getattr(known, 'command', None), self)
      if 'positional' in parser.renamed:
        raise UserError(f'unexpected argument {extra[0]!r}: {parser.renamed["positional"]}')
      raise UserError(f'unexpected argument {extra[0]!r}: {parser.prog} takes no more arguments '
                      f'(see {parser.prog} --help)')
    return known

  def _subcommands(self) -> dict:
    for action in self._actions:
      if isinstance(action, argparse._SubParsersAction):  # noqa: SLF001 -- argparse keeps them nowhere else.
        return action.choices
    return {}

  def _refuse_unknown(self, args: list[str]) -> None:
    """The first flag that neither the command nor its subcommand (once named) has."""
    parser = self
    for arg in args:
      if arg == '--':
        return
      if not arg.startswith('-') or re.match(r'^-\d', arg):  # A value, a subcommand or a negative number.
        parser = parser._subcommands().get(arg, parser)
        continue
      name = arg.split('=', 1)[0]
      if name in parser._option_string_actions:
        continue
      if parser._subcommands() and not parser.flag_names():
        raise UserError(f'unknown flag {name}; {parser.prog} takes a command first: '
                        f'{", ".join(parser._subcommands())}')
      raise UserError(f'unknown flag {name}; the flags of {parser.prog} are {", ".join(parser.flag_names())}')


def run(main, argv: list[str] | None = None) -> int:
  """main(argv)'s exit status, with a mistake (UserError: 2) or a run that could not go on (RunFailed: its own
  status) said in one line on stderr, and Ctrl-C as the shell reports it (130)."""
  try:
    return main(argv) or 0
  except UserError as e:
    print(f'error: {e}', file=sys.stderr, flush=True)
    return 2
  except RunFailed as e:
    print(f'error: {e}', file=sys.stderr, flush=True)
    return e.exit_status
  except KeyboardInterrupt:
    print('interrupted', file=sys.stderr, flush=True)
    return 130
