"""Where a figure came from: the code, the libraries, the machine and the command of a training session.

`collect()` is recorded in every checkpoint (one entry per session that trained the run), in
WORKDIR/config.json and in WORKDIR/results.json; the comparison and ablation tables print it in a
footer (`footer`). The git commit is that of the checkout `pfca_jax` is imported from, and only when
the package really lives in that checkout (an editable install or a run from the repository root),
never that of an unrelated repository around a virtual environment.
"""

import importlib.metadata
import os
import platform
import shlex
import subprocess
import sys

_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # pfca_jax/


def _git(*args: str) -> str | None:
  try:
    done = subprocess.run(['git', '-C', _PACKAGE_DIR, *args], capture_output=True, text=True, timeout=10)
  except (OSError, subprocess.TimeoutExpired):
    return None
  return done.stdout.strip() if done.returncode == 0 else None


def git_state() -> dict:
  """{'commit': sha or None, 'dirty': bool or None}: dirty when a tracked file differs from the commit or
  a file git does not ignore is new, since either may change what the code computes."""
  top = _git('rev-parse', '--show-toplevel')
  if top is None or os.path.realpath(os.path.join(top, 'pfca_jax')) != os.path.realpath(_PACKAGE_DIR):
    return {'commit': None, 'dirty': None}
  status = _git('status', '--porcelain')
  return {'commit': _git('rev-parse', 'HEAD'), 'dirty': None if status is None else bool(status)}


def _version(distribution: str) -> str | None:
  try:
    return importlib.metadata.version(distribution)
  except importlib.metadata.PackageNotFoundError:
    return None


def command_line() -> str:
  """The command as it was typed (`python -m pfca_jax.main ...`), with the interpreter's path."""
  return shlex.join(getattr(sys, 'orig_argv', sys.argv))


def collect() -> dict:
  """This process's provenance; call it after jax.distributed.initialize (it counts devices)."""
  import jax
  devices = jax.devices()
  return {
      'package': 'pfca-jax', 'version': _version('pfca-jax'), **git_state(),
      'jax': jax.__version__, 'jaxlib': _version('jaxlib'), 'flax': _version('flax'),
      'python': platform.python_version(), 'backend': jax.default_backend(),
      'device_kind': devices[0].device_kind, 'device_count': len(devices), 'process_count': jax.process_count(),
      'command': command_line(),
  }


def describe(record: dict) -> str:
  """One line: 'pfca-jax 0.1.0 at 1a2b3c4d5e6f (dirty), jax 0.10.2, ..., 8 x cpu (cpu), 1 process'."""
  commit = record.get('commit')
  code = f'pfca-jax {record.get("version")}' + (
      f' at {commit[:12]}' + (' (dirty)' if record.get('dirty') else '') if commit else ' (not a git checkout)')
  processes = record.get('process_count')
  return (f'{code}; jax {record.get("jax")}, jaxlib {record.get("jaxlib")}, flax {record.get("flax")}, '
          f'Python {record.get("python")}; {record.get("device_count")} x {record.get("device_kind")} '
          f'({record.get("backend")}), {processes} process{"es" if processes != 1 else ""}')


def footer(runs: list[dict]) -> str:
  """Lines naming the code and machine of each run (from results.json), runs with the same ones grouped.

  A run resumed by sessions of different code or machines lists each, in order.
  """
  groups: dict[str, list[str]] = {}
  commands: dict[str, list[str]] = {}
  for run in runs:
    sessions = run.get('sessions') or ([run['provenance']] if run.get('provenance') else [])
    text = ' then '.join(dict.fromkeys(describe(s) for s in sessions)) or 'no provenance recorded'
    groups.setdefault(text, []).append(run['label'])
    for command in dict.fromkeys(s['command'] for s in sessions if s.get('command')):
      commands.setdefault(command, []).append(run['label'])
  lines = [f'Produced by {text}' + ('.' if len(groups) == 1 else f' ({"; ".join(labels)}).')
           for text, labels in groups.items()]
  lines += [f'Command: `{command}`' + ('' if len(commands) == 1 else f' ({"; ".join(labels)})')
            for command, labels in commands.items()]
  return '\n\n'.join(lines)
