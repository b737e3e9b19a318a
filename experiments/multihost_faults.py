"""Lose one process of four: SIGKILL a random one at a random moment; the others must end in one line; the rerun resumes exactly.

    python experiments/multihost_faults.py --trials=20 --seed=0 --out=experiments/results/multihost_faults.json
        [--steps=16] [--checkpoint_every=4] [--eval_every=8] [--workroot=DIR] [--keep_workdirs]

Each job is `configs/quickstart.py` (ResNet-20 + PFCA on the sklearn digits, offline) as 4 processes of
2 simulated CPU devices each, joined on localhost with the explicit flags, every process reading one
persistent compilation cache. First a reference job, never stopped. Then each trial starts a fresh job
and SIGKILLs one process, the victim drawn at random (process 0, the coordinator, included), at a
moment drawn at random (pfca_jax/train/fault_injection.py places the kill):

- startup: 0-3 s after the processes joined: reading the workdir, restoring, compiling;
- step: 0-0.3 s after a training step that neither evaluates nor checkpoints was dispatched;
- save: 0-0.2 s after an asynchronous checkpoint save began, while it writes in the background;
- eval: 0.1-1 s into an evaluation.

A trial is lost unless every other process exits with a non-zero status, not 134 (an abort) nor a
signal, within --bound_s of the kill; writes exactly one line on stderr, `error: ...` naming a lost
process and the last complete checkpoint, and no traceback or fatal-error dump anywhere; the helper
process that holds process 0's coordination service (pfca_jax/cli/coordination_service.py) is gone
within peer_timeout_s + 40 s of the kill; and the same command, rerun on the workdir, exits 0 with a
final checkpoint bit-identical to the reference's and the reference's final metrics. Exit status 1
when a trial was lost. Records go to --out, the table beside it (.md).
"""

import dataclasses
import importlib.util
import json
import os
import random
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time

from pfca_jax.cli import runner

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MOMENTS = ('startup', 'step', 'save', 'eval')
# The fatal-error dump of JAX's runtime, a Python traceback, or an abort: never acceptable on a survivor.
_NOISE = re.compile(r'Traceback|Check failure|Terminating process|\*\*\* SIGABRT|Fatal Python error')


def _sibling(name: str):
  spec = importlib.util.spec_from_file_location(name, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                                   f'{name}.py'))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


kill_resume = _sibling('kill_resume')  # The bit-for-bit comparison of final checkpoints.


def free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


@dataclasses.dataclass
class Setup:
  """What every job of one invocation shares: the command, the data and cache, and the timeouts."""
  workroot: str
  cache_dir: str
  steps: int = 16
  checkpoint_every: int = 4
  eval_every: int = 8
  processes: int = 4
  devices: int = 2
  peer_timeout_s: float = 30
  xla_flags: str = ''  # Beside the simulated devices (the tests add their quick-compile flags).
  run_timeout: float = 600.0

  def command(self, workdir: str, extra: tuple[str, ...] = ()) -> list[str]:
    return [sys.executable, '-m', 'pfca_jax.main', '--config=configs/quickstart.py', f'--workdir={workdir}',
            '--config.compare_attentions=', '--config.model.attention=pfca',
            f'--config.data_dir={os.path.join(self.workroot, "tfds")}', f'--config.num_train_steps={self.steps}',
            '--config.log_every_steps=1', f'--config.eval_every_steps={self.eval_every}',
            f'--config.checkpoint_every_steps={self.checkpoint_every}',
            f'--config.peer_timeout_s={self.peer_timeout_s}', *extra]

  def environment(self, **extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(('PFCA_JAX_FAULT', 'SLURM_', 'OMPI_'))}
    env.update(XLA_FLAGS=f'--xla_force_host_platform_device_count={self.devices} {self.xla_flags}'.strip(),
               JAX_COMPILATION_CACHE_DIR=self.cache_dir, JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS='0',
               PYTHONUNBUFFERED='1', TF_CPP_MIN_LOG_LEVEL='2', **extra)
    return env

  def prepare_data(self) -> None:
    """The digits prepared once, before any job: four processes need not all race to prepare them."""
    from pfca_jax.data import digits, tfds_source
    tfds_source.open_local_builder(digits.SklearnDigits, os.path.join(self.workroot, 'tfds'))


class Job:
  """The processes of one job on localhost, each with its own log files; exit times measured by polling."""

  def __init__(self, setup: Setup, workdir: str, *, extra=(), env_of=lambda i: {}, flags: bool = True):
    self.workdir, self.port = workdir, free_port()
    self.logs = workdir.rstrip('/') + f'.logs/{time.strftime("%H%M%S")}-{self.port}'
    os.makedirs(self.logs, exist_ok=True)
    self.start = time.monotonic()
    self.procs = []
    for i in range(setup.processes):
      join = ([f'--coordinator_address=127.0.0.1:{self.port}', f'--num_processes={setup.processes}',
               f'--process_id={i}'] if flags and setup.processes > 1 else [])
      env = setup.environment(**env_of(i))
      env.setdefault('JAX_COORDINATOR_PORT', str(self.port))  # Where a launcher's environment names no port.
      with open(self.path(i, 'out'), 'w') as out, open(self.path(i, 'err'), 'w') as err:
        self.procs.append(subprocess.Popen(setup.command(workdir, extra) + join, cwd=REPO, env=env, stdout=out,
                                           stderr=err, start_new_session=True))
    self.ended_at = [None] * len(self.procs)

  def path(self, i: int, stream: str) -> str:
    return os.path.join(self.logs, f'{i}.{stream}')

  def text(self, i: int, stream: str) -> str:
    with open(self.path(i, stream)) as f:
      return f.read()

  def poll(self) -> bool:
    """Records exit times; True once every process has ended."""
    for i, proc in enumerate(self.procs):
      if self.ended_at[i] is None and proc.poll() is not None:
        self.ended_at[i] = time.monotonic() - self.start
    return all(t is not None for t in self.ended_at)

  def wait(self, timeout: float, until=None) -> bool:
    """Polls until every process ended (or `until()` holds); False on the timeout, with every process killed."""
    deadline = time.monotonic() + timeout
    while not self.poll() and not (until and until()):
      if time.monotonic() > deadline:
        self.kill()
        return False
      time.sleep(0.05)
    return True

  def kill(self) -> None:
    for proc in self.procs:
      if proc.poll() is None:
        os.killpg(proc.pid, 9)
    for proc in self.procs:
      proc.wait()
    self.poll()

  def statuses(self) -> list[int]:
    return [proc.returncode for proc in self.procs]

  def last_step(self) -> int:
    """The last `step N/...` line process 0 printed."""
    steps = re.findall(r'^step (\d+)/', self.text(0, 'out'), re.M)
    return int(steps[-1]) if steps else 0

  def error_lines(self, i: int) -> list[str]:
    return [line for line in self.text(i, 'err').splitlines() if line.strip()]

  def noise(self, i: int) -> bool:
    return bool(_NOISE.search(self.text(i, 'out') + self.text(i, 'err')))


def service_helpers(port: int) -> list[int]:
  """Pids of live coordination-service helpers of the job on PORT."""
  pids = []
  for pid in filter(str.isdigit, os.listdir('/proc')):
    try:
      with open(f'/proc/{pid}/cmdline', 'rb') as f:
        args = f.read().split(b'\0')
    except OSError:
      continue
    if b'pfca_jax.cli.coordination_service' in args and any(a.endswith(f':{port}'.encode()) for a in args):
      pids.append(int(pid))
  return pids


def run_to_end(setup: Setup, workdir: str, **job_options) -> Job:
  job = Job(setup, workdir, **job_options)
  if not job.wait(setup.run_timeout) or any(job.statuses()):
    raise RuntimeError(f'the job on {workdir} exited with {job.statuses()}: {job.error_lines(0)[-3:]}')
  return job


def reference(setup: Setup) -> dict:
  """The job never stopped: its final state and metrics."""
  workdir = os.path.join(setup.workroot, 'reference')
  job = run_to_end(setup, workdir)
  step, state = kill_resume.final_checkpoint(workdir)
  results, _ = kill_resume.read_outputs(workdir)
  if step != setup.steps or results is None:
    raise RuntimeError(f'the reference job ended at step {step}')
  return {'workdir': workdir, 'state': state, 'final': results['final'], 'seconds': round(job.ended_at[0], 1)}


def draw(setup: Setup, rng: random.Random) -> dict:
  """A victim, a moment, and where in the run it falls."""
  moment = rng.choice(MOMENTS)
  plain = [s for s in range(2, setup.steps) if s % setup.eval_every and s % setup.checkpoint_every]
  steps = {'startup': [0], 'step': plain,
           'save': list(range(setup.checkpoint_every, setup.steps, setup.checkpoint_every)),
           'eval': list(range(setup.eval_every, setup.steps, setup.eval_every))}[moment]
  delay = {'startup': (0, 3), 'step': (0, 0.3), 'save': (0, 0.2), 'eval': (0.1, 1)}[moment]
  return {'victim': rng.randrange(setup.processes), 'moment': moment, 'step': rng.choice(steps),
          'delay_s': round(rng.uniform(*delay), 2)}


def judge_survivors(job: Job, victim: int, bound_s: float) -> dict:
  """Each survivor's status, seconds from the kill to its exit, its stderr line, and whether all that is right."""
  killed_at = job.ended_at[victim]
  survivors = {}
  for i, status in enumerate(job.statuses()):
    if i == victim:
      continue
    lines = job.error_lines(i)
    after = round(job.ended_at[i] - killed_at, 1)
    ok = (status not in (0, 134) and status > 0 and after <= bound_s and len(lines) == 1
          and lines[0].startswith('error: ') and 'lost' in lines[0] and 'checkpoint' in lines[0] and not job.noise(i))
    survivors[i] = {'status': status, 'after_kill_s': after, 'line': lines[0] if len(lines) == 1 else lines, 'ok': ok}
  return survivors


def trial(setup: Setup, ref: dict, index: int, rng: random.Random, bound_s: float, keep: bool = False) -> dict:
  workdir = os.path.join(setup.workroot, f'trial_{index:03d}')
  shutil.rmtree(workdir, ignore_errors=True)
  fault = draw(setup, rng)
  spec = f'{fault["victim"]}:{fault["moment"]}:{fault["step"]}:kill:{fault["delay_s"]}'
  record = {'trial': index, **fault, 'failure': None}
  t0 = time.monotonic()
  job = Job(setup, workdir, env_of=lambda i: {'PFCA_JAX_FAULT': spec})
  if not job.wait(setup.run_timeout):
    record['failure'] = 'the faulty job did not end'
  statuses = job.statuses()
  record['victim_status'] = statuses[fault['victim']]
  record['killed_at_s'] = round(job.ended_at[fault['victim']], 1)
  record['survivors'] = judge_survivors(job, fault['victim'], bound_s)
  # The service helper outlives a killed process 0 by peer_timeout_s + 30 s, no more.
  deadline = t0 + job.ended_at[fault['victim']] + setup.peer_timeout_s + 40
  while service_helpers(job.port) and time.monotonic() < deadline:
    time.sleep(0.5)
  record['left_running'] = len(service_helpers(job.port)) + sum(p.poll() is None for p in job.procs)
  rerun = Job(setup, workdir)
  resumed = rerun.wait(setup.run_timeout)
  header = re.search(r'resuming at step (\d+)', rerun.text(0, 'out'))
  record['resumed_at'] = int(header.group(1)) if header else 0
  record['rerun_statuses'] = rerun.statuses()
  step, state = kill_resume.final_checkpoint(workdir)
  results, _ = kill_resume.read_outputs(workdir)
  record['differences'] = (['no checkpoint'] if state is None else kill_resume.differences(ref['state'], state)
                           + ([] if step == setup.steps else [f'step {step}']))
  record['identical'] = resumed and not any(rerun.statuses()) and not record['differences'] and bool(
      results and results.get('final') == ref['final'])
  record['lost'] = bool(record['failure'] or record['victim_status'] != -9 or record['left_running']
                        or not all(s['ok'] for s in record['survivors'].values()) or not record['identical'])
  record['seconds'] = round(time.monotonic() - t0, 1)
  if not record['lost'] and not keep:
    shutil.rmtree(workdir, ignore_errors=True)
    shutil.rmtree(workdir + '.logs', ignore_errors=True)
  return record


def describe(r: dict) -> str:
  survivors = ', '.join(f'{i}: {s["status"]} after {s["after_kill_s"]:.1f} s' for i, s in r['survivors'].items())
  return (f'trial {r["trial"]}: process {r["victim"]} killed at {r["moment"]} (step {r["step"]}, +{r["delay_s"]} s); '
          f'{survivors}; resumed at step {r["resumed_at"]}, {"identical" if r["identical"] else "NOT identical"}'
          + (' -- LOST' if r['lost'] else ''))


def write_markdown(report: dict, path: str) -> None:
  trials = report['trials']
  lost = sum(t['lost'] for t in trials)
  worst = max((s['after_kill_s'] for t in trials for s in t['survivors'].values()), default=0)
  lines = ['# Lose one process of four', '',
           f'Command: `{report["command"]}`', '',
           f'Machine: {report["machine"]}; measured {report["date"]}; code {report["commit"]}.', '',
           f'Each job: `python {report["trainer_command"]}` started as 4 processes of 2 simulated CPU devices '
           f'(`--coordinator_address=127.0.0.1:PORT --num_processes=4 --process_id=i`). Reference job, never stopped: '
           f'{report["reference"]["seconds"]:.0f} s. Each trial SIGKILLs one process (experiments/multihost_faults.py '
           'says how the victim and the moment are drawn), then reruns the same command on the workdir.', '',
           f'{len(trials)} trials, {lost} lost. Every survivor exited with status 5 within {worst:.1f} s of the kill '
           f'(bound {report["bound_s"]:g} s; config.peer_timeout_s = {report["setup"]["peer_timeout_s"]:g}).'
           if not lost else f'{len(trials)} trials, {lost} lost (see the JSON records).', '',
           '| trial | victim | moment (step, delay) | survivors: status, seconds from the kill to the exit '
           '| one line, no dump | resumed at | identical |',
           '|---:|---:|---|---|---|---:|---|']
  for t in trials:
    survivors = '; '.join(f'{i}: {s["status"]}, {s["after_kill_s"]:.1f} s' for i, s in t['survivors'].items())
    one_line = 'yes' if all(s['ok'] for s in t['survivors'].values()) else 'NO'
    lines.append(f'| {t["trial"]} | {t["victim"]} | {t["moment"]} ({t["step"]}, +{t["delay_s"]} s) | {survivors} '
                 f'| {one_line} | {t["resumed_at"]} | {"yes" if t["identical"] else "NO"} |')
  example = next((t for t in trials if not t['lost']), None)
  if example is not None:
    lines += ['', f'The survivors\' lines in trial {example["trial"]}:', '']
    lines += [f'    process {i}: {s["line"]}' for i, s in example['survivors'].items()]
  with open(path, 'w') as f:
    f.write('\n'.join(lines) + '\n')


def main(argv=None) -> int:
  parser = runner.Parser(description=__doc__.split('\n\n')[0])
  for name, default in (('trials', 20), ('seed', 0), ('steps', 16), ('checkpoint_every', 4), ('eval_every', 8)):
    parser.add_argument(f'--{name}', type=int, default=default)
  parser.add_argument('--bound_s', type=float, default=60.0, help='Seconds a survivor may take to exit after the kill.')
  parser.add_argument('--out', default=os.path.join(REPO, 'experiments', 'results', 'multihost_faults.json'))
  parser.add_argument('--workroot', default=None, help='Workdirs, dataset and cache (default: a new temporary folder).')
  parser.add_argument('--keep_workdirs', action='store_true', help='Keep the workdirs of trials that were not lost.')
  args = parser.parse_args(argv)
  from absl import logging  # orbax warns, through absl, that the checkpoints are opened read-only.
  logging.set_verbosity(logging.ERROR)
  workroot = os.path.abspath(args.workroot or tempfile.mkdtemp(prefix='multihost_faults_'))
  setup = Setup(workroot, os.path.join(workroot, 'jax_cache'), args.steps, args.checkpoint_every, args.eval_every)
  setup.prepare_data()
  ref = reference(setup)
  print(f'reference: {setup.steps} steps in {ref["seconds"]:.0f} s (workroot {workroot})', flush=True)
  report = {'command': ' '.join(['python', 'experiments/multihost_faults.py'] + (argv or sys.argv[1:])),
            **kill_resume.provenance(), 'trainer_command': ' '.join(setup.command('WORKDIR')[1:]),
            'setup': dataclasses.asdict(setup), 'bound_s': args.bound_s,
            'reference': {k: v for k, v in ref.items() if k != 'state'}, 'trials': []}
  for index in range(args.trials):
    record = trial(setup, ref, index, random.Random(f'{args.seed}-{index}'), args.bound_s, args.keep_workdirs)
    report['trials'].append(record)
    print(describe(record), flush=True)
    with open(args.out, 'w') as f:  # After every trial: a stopped harness keeps what it measured.
      json.dump(report, f, indent=1)
    write_markdown(report, os.path.splitext(args.out)[0] + '.md')
  return 1 if any(t['lost'] for t in report['trials']) else 0


if __name__ == '__main__':
  sys.exit(runner.run(main))
