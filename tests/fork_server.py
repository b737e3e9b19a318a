"""Runs command-line modules (`python -m pfca_jax.main ...`) many times fast: a server process imports
jax and TensorFlow once (starting no JAX backend) and forks a child per request, which runs the module
as `__main__` as `python -m` would (or a script of the repository, as `python script.py` would), with fresh absl flags (they cannot be parsed twice in one process:
the --config.FIELD flags are registered by the first parse). Used by test_bad_inputs.py, test_convert_cli.py
and test_exit_statuses.py, which has the server send the child a signal once a line it waits for is printed.
"""

import json
import os
import runpy
import signal
import subprocess
import sys
import time
import traceback

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CASE_TIMEOUT_S = 60


def _run_module(module: str, argv: list[str]) -> int:
  """What `python -m module argv...` (or `python script.py argv...` for a module ending in .py, a path relative
  to the repository) does after start-up, as an exit status."""
  sys.argv = [module, *argv]
  # As in a fresh interpreter, the module is not imported yet (runpy would warn on stderr that it is).
  sys.modules.pop(module, None)
  try:
    if module.endswith('.py'):
      runpy.run_path(os.path.join(REPO, module), run_name='__main__')
    else:
      runpy.run_module(module, run_name='__main__', alter_sys=True)
    return 0
  except SystemExit as e:
    if e.code is None or isinstance(e.code, int):
      return e.code or 0
    print(e.code, file=sys.stderr)
    return 1
  except BaseException:  # noqa: BLE001 -- the interpreter's own handling: a traceback and status 1.
    traceback.print_exc()
    return 1


def _child(request: dict) -> None:
  try:
    os.chdir(request['cwd'])
    for fd, path in ((1, request['stdout']), (2, request['stderr'])):
      os.dup2(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644), fd)
    if 'code' in request:
      exec(compile(request['code'], '<setup>', 'exec'), {'__name__': '__setup__'})  # noqa: S102 -- our own code.
      code = 0
    else:
      code = _run_module(request['module'], request['argv'])
  except BaseException:  # noqa: BLE001
    traceback.print_exc()
    code = 1
  sys.stdout.flush()
  sys.stderr.flush()
  os._exit(code)


def _fork(request: dict) -> dict:
  sys.stdout.flush()
  sys.stderr.flush()
  pid = os.fork()
  if pid == 0:
    _child(request)
  deadline = time.monotonic() + request.get('timeout', CASE_TIMEOUT_S)
  # [text, signal number]: sent once, when the text first appears in the child's stdout. Sent from here, not
  # from the test, as the server alone knows the child's pid.
  pending = request.get('signal_after')
  while True:
    done, status = os.waitpid(pid, os.WNOHANG)
    if done:
      return {'rc': os.waitstatus_to_exitcode(status), 'signalled': bool(request.get('signal_after')) and not pending}
    if pending and os.path.exists(request['stdout']):  # The child creates it.
      with open(request['stdout'], errors='replace') as f:
        if pending[0] in f.read():
          os.kill(pid, pending[1])
          pending = None
    if time.monotonic() > deadline:
      os.kill(pid, signal.SIGKILL)
      os.waitpid(pid, 0)
      return {'rc': None, 'timed_out': True}
    time.sleep(0.01)


def serve() -> None:
  """Imports what the commands import (no JAX backend starts), then runs each request of stdin in a fork."""
  from pfca_jax import image_io
  image_io.import_tensorflow()
  import absl.app  # noqa: F401
  import ml_collections.config_flags  # noqa: F401
  import pfca_jax.plot  # noqa: F401
  import pfca_jax.predict  # noqa: F401
  import pfca_jax.studies.compare  # noqa: F401
  import pfca_jax.train.loop  # noqa: F401
  protocol = os.fdopen(os.dup(1), 'w')
  print('ready', file=protocol, flush=True)
  for line in sys.stdin:
    print(json.dumps(_fork(json.loads(line))), file=protocol, flush=True)


class Server:
  """The pytest side of `serve`: one request at a time."""

  def __init__(self, env: dict, log: str):
    self.log = open(log, 'w')
    self.process = subprocess.Popen([sys.executable, os.path.abspath(__file__), 'serve'], cwd=REPO, env=env,
                                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log, text=True)
    assert self.process.stdout.readline().strip() == 'ready', open(log).read()[-3000:]

  def _request(self, request: dict) -> dict:
    self.process.stdin.write(json.dumps(request) + '\n')
    self.process.stdin.flush()
    return json.loads(self.process.stdout.readline())

  def run(self, module: str, argv: list[str], cwd: str, log: str, *, signal_after: tuple[str, int] | None = None,
          timeout: float = CASE_TIMEOUT_S) -> tuple[int | None, str, str]:
    """(exit status or None if it timed out, stdout, stderr); the outputs are kept in log.stdout, log.stderr.

    signal_after=(text, signum): the child is sent that signal once text appears in its stdout (asserted to
    have happened, so that a run that ends before the text cannot pass for one that was stopped)."""
    out, err = log + '.stdout', log + '.stderr'
    request = {'module': module, 'argv': argv, 'cwd': cwd, 'stdout': out, 'stderr': err, 'timeout': timeout}
    if signal_after is not None:
      request['signal_after'] = list(signal_after)
    result = self._request(request)
    with open(out) as f, open(err) as g:
      out_text, err_text = f.read(), g.read()
    assert signal_after is None or result['signalled'], f'{signal_after[0]!r} never printed:\n{out_text[-3000:]}'
    return result['rc'], out_text, err_text

  def run_code(self, code: str, cwd: str) -> dict:
    return self._request({'code': code, 'cwd': cwd, 'stdout': f'{cwd}/setup.stdout', 'stderr': f'{cwd}/setup.stderr',
                          'timeout': 300})

  def close(self) -> None:
    self.process.stdin.close()
    self.process.wait(timeout=60)
    self.log.close()


if __name__ == '__main__' and sys.argv[1:] == ['serve']:
  serve()
