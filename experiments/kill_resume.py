"""Kill anywhere, resume exactly: SIGKILL the trainer at random moments, rerun it, compare with a run never stopped.

    python experiments/kill_resume.py --trials=50 --seed=0 --out=experiments/results/kill_resume.json
        [--min_kills=1] [--max_kills=3] [--steps=30] [--checkpoint_every=4] [--eval_every=10]
        [--workroot=DIR] [--cache_dir=DIR] [--keep_workdirs] [--no-require_tmp_cleanup]

The run is `configs/quickstart.py` (sklearn digits, offline) as one PFCA run of --steps steps, a log
line every step, an asynchronous orbax checkpoint every --checkpoint_every steps and an evaluation of
the 360 test digits, in batches of 4 so that it lasts, every --eval_every steps. Every process shares
one persistent JAX compilation cache, so a restart costs the imports and a cache read, not a compilation.

First a warm-up run (prepares the dataset, fills the cache) and the reference, never stopped, whose
final checkpoint is read back (parameters, optimiser state, BatchNorm statistics, step) as NumPy
arrays. Then each trial starts the same command on a fresh workdir and kills it (SIGKILL, its whole
process group) 1 to --max_kills times, each kill aimed at a phase drawn at random:

- startup: at a random moment before the reference printed its first step (imports, restore, compile);
- train: a little after the log line of a random step that neither evaluates nor checkpoints;
- eval: a little after the log line of an evaluation step, before its `eval` line;
- save: at once when WORKDIR/checkpoints holds a folder named *orbax-checkpoint-tmp*, an orbax save in
  flight, polled from a checkpoint step on.

The phase recorded is what was seen at the kill (a save aimed at but renamed first is a train kill).
After each kill the command is rerun on the same workdir until a run exits 0; then the final
checkpoint must equal the reference's bit for bit (tree, dtypes, shapes, bytes, step), results.json
must hold the reference's final metrics and every line of metrics.jsonl must be JSON. A trial is lost
when any of that fails, when a rerun fails (non-zero exit, or none within --run_timeout), or, with
--require_tmp_cleanup (the default), when an interrupted save's temporary folder is still there at
the rerun's first line. Lost trials keep their workdirs. Exit status 1 when anything was lost. The records go to --out
(JSON, rewritten after every trial) and the summary beside it (.md); trial i draws its phases and
moments from (--seed, i).
"""

import argparse
import dataclasses
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np

from pfca_jax.cli import runner

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PHASES = ('startup', 'train', 'save', 'eval')
TMP_MARK = 'orbax-checkpoint-tmp'


@dataclasses.dataclass
class Setup:
  """What every run of one harness invocation shares: the trainer's command and where things go."""
  workroot: str
  cache_dir: str
  steps: int = 30
  checkpoint_every: int = 4
  eval_every: int = 10
  eval_batch_size: int = 4
  run_timeout: float = 900.0

  def command(self, workdir: str) -> list[str]:
    return [sys.executable, '-m', 'pfca_jax.main', '--config=configs/quickstart.py', f'--workdir={workdir}',
            '--config.compare_attentions=', '--config.model.attention=pfca',
            f'--config.data_dir={os.path.join(self.workroot, "tfds")}', f'--config.num_train_steps={self.steps}',
            '--config.log_every_steps=1', f'--config.eval_every_steps={self.eval_every}',
            f'--config.checkpoint_every_steps={self.checkpoint_every}',
            f'--config.eval_batch_size={self.eval_batch_size}']

  def environment(self) -> dict:
    env = dict(os.environ)
    # One device whatever the caller simulates (the tests ask for 8): the reference and the trials must
    # run the same programs, and one device is the quickest on a small CPU.
    flags = [f for f in env.get('XLA_FLAGS', '').split() if 'xla_force_host_platform_device_count' not in f]
    env['XLA_FLAGS'] = ' '.join(flags)
    env.update(JAX_COMPILATION_CACHE_DIR=self.cache_dir, JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS='0',
               PYTHONUNBUFFERED='1', TF_CPP_MIN_LOG_LEVEL='2')
    return env

  def is_eval_step(self, step: int) -> bool:
    return step % self.eval_every == 0 or step == self.steps

  def is_checkpoint_step(self, step: int) -> bool:
    return step % self.checkpoint_every == 0 or step == self.steps


_HEADER = re.compile(r'steps/epoch, \d+ steps(?:, resuming at step (\d+))?')
_STEP = re.compile(r'^step (\d+)/\d+ \|')
_EVAL = re.compile(r'^eval \S+ at step (\d+):')


class Run:
  """One trainer process on a workdir, in its own process group, its output parsed as it comes."""

  def __init__(self, setup: Setup, workdir: str):
    self.workdir = workdir
    self.start = time.monotonic()
    self.proc = subprocess.Popen(setup.command(workdir), cwd=REPO, env=setup.environment(), stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT, text=True, start_new_session=True)
    self.lines = []
    self.start_step = self.last_step = self.last_eval = self.first_step_s = None
    self.at_header = None  # WORKDIR/checkpoints when the first line came: the checkpoints are open by then.
    self.ended = False
    self._changed = threading.Condition()
    self._reader = threading.Thread(target=self._read, daemon=True)
    self._reader.start()

  def _read(self):
    for line in self.proc.stdout:
      with self._changed:
        self.lines.append(line.rstrip('\n'))
        if (m := _HEADER.search(line)) and self.start_step is None:
          self.start_step = int(m.group(1) or 0)
          self.at_header = listing(self.workdir)
        elif m := _STEP.match(line):
          self.last_step = int(m.group(1))
          self.first_step_s = self.first_step_s or time.monotonic() - self.start
        elif m := _EVAL.match(line):
          self.last_eval = int(m.group(1))
        self._changed.notify_all()
    with self._changed:
      self.ended = True
      self._changed.notify_all()

  def wait_for(self, predicate, timeout: float) -> bool:
    """True once `predicate()` holds; False when the output ended (or `timeout` passed) first."""
    with self._changed:
      return self._changed.wait_for(lambda: predicate() or self.ended, timeout) and predicate()

  def seconds(self) -> float:
    return time.monotonic() - self.start

  def kill(self) -> None:
    os.killpg(self.proc.pid, signal.SIGKILL)  # The trainer and anything it started, at once.
    self.finish()

  def finish(self, timeout: float | None = None) -> int:
    """The exit status (negative for a signal); raises subprocess.TimeoutExpired after `timeout`."""
    code = self.proc.wait(timeout)
    self._reader.join()
    return code

  def tail(self, lines: int = 15) -> str:
    return '\n'.join(self.lines[-lines:])


def listing(workdir: str) -> list[str]:
  try:
    return sorted(os.listdir(os.path.join(workdir, 'checkpoints')))
  except FileNotFoundError:
    return []


def tmp_folders(names: list[str]) -> list[str]:
  return [n for n in names if TMP_MARK in n]


def observed_phase(setup: Setup, run: Run, names: list[str]) -> str:
  """What the trainer was doing at the kill, from its output and its checkpoint folder."""
  if run.last_step is None:
    return 'startup'  # Imports, restore, compilation, or the first step before its line.
  saving = [int(n.split('.')[0]) for n in tmp_folders(names) if n.split('.')[0].isdigit()]
  # A step's save starts after its evaluation: a save of the last step logged means its evaluation
  # is over, even if its line has not been read yet.
  if setup.is_eval_step(run.last_step) and run.last_eval != run.last_step and run.last_step not in saving:
    return 'eval'
  if tmp_folders(names):
    return 'save'
  return 'finish' if run.last_step == setup.steps else 'train'


def aim(setup: Setup, run: Run, phase: str, rng: random.Random, first_step_s: float) -> bool:
  """Waits for a moment of `phase` to kill `run`; False when the run ended (or has no such moment left)."""
  if phase == 'startup':
    moment = run.start + rng.uniform(0.1, 1.0) * first_step_s
    run.wait_for(lambda: False, max(moment - time.monotonic(), 0.0))
    return not run.ended
  if not run.wait_for(lambda: run.start_step is not None, setup.run_timeout):
    return False
  later = range(run.start_step + 1, setup.steps + 1)
  if phase == 'train':
    targets = [s for s in later if not setup.is_eval_step(s) and not setup.is_checkpoint_step(s)]
  else:
    targets = [s for s in later if (setup.is_eval_step if phase == 'eval' else setup.is_checkpoint_step)(s)]
  if not targets:
    return False
  target = rng.choice(targets)
  if not run.wait_for(lambda: (run.last_step or 0) >= target, setup.run_timeout):
    return False
  if phase != 'save':
    # Steps take about 0.1 s here and an evaluation 1-2 s: a short random delay stays inside either.
    run.wait_for(lambda: False, rng.uniform(0.0, 0.1 if phase == 'train' else 0.3))
    return not run.ended
  while not run.ended:  # Polled, from the target step's line on, until a save is caught in flight.
    if tmp_folders(listing(run.workdir)):
      return True
    time.sleep(0.001)
  return False


def run_to_end(setup: Setup, workdir: str) -> Run:
  run = Run(setup, workdir)
  code = run.finish(setup.run_timeout)
  if code != 0:
    raise RuntimeError(f'the run on {workdir} exited with {code}:\n{run.tail()}')
  return run


def final_checkpoint(workdir: str) -> tuple[int | None, object]:
  """(step, state as NumPy arrays) of WORKDIR's latest checkpoint, read as the trainer's own readers do."""
  from pfca_jax.train import checkpointing  # JAX only once a checkpoint is read: the harness itself stays light.
  with checkpointing.reading(workdir) as (manager, latest):
    if latest is None:
      return None, None
    return latest, checkpointing.restore(manager, latest)[0]


def differences(reference, state, limit: int = 5) -> list[str]:
  """Leaves of two states that are not bit-identical (tree paths, dtypes, shapes, bytes), at most `limit`."""
  import jax
  flat = [{jax.tree_util.keystr(p): np.asarray(v) for p, v in jax.tree_util.tree_leaves_with_path(t)}
          for t in (reference, state)]
  found = [f'{k}: only in the reference' for k in flat[0].keys() - flat[1].keys()]
  found += [f'{k}: not in the reference' for k in flat[1].keys() - flat[0].keys()]
  for key in sorted(flat[0].keys() & flat[1].keys()):
    a, b = flat[0][key], flat[1][key]
    if (a.dtype, a.shape) != (b.dtype, b.shape):
      found.append(f'{key}: {b.dtype}{list(b.shape)} instead of {a.dtype}{list(a.shape)}')
    elif a.tobytes() != b.tobytes():
      gap = np.max(np.abs(a.astype(np.float64) - b.astype(np.float64))) if a.dtype.kind in 'fiu' else '?'
      found.append(f'{key}: {np.sum(a != b)} of {a.size} values differ (max |diff| {gap})')
  return sorted(found)[:limit]


def _is_json(text: str) -> bool:
  try:
    json.loads(text)
  except ValueError:
    return False
  return True


def read_outputs(workdir: str) -> tuple[dict | None, int]:
  """(results.json or None, count of metrics.jsonl lines that are not JSON; -1 without the file)."""
  try:
    with open(os.path.join(workdir, 'results.json')) as f:
      results = json.load(f)
  except (OSError, ValueError):
    results = None
  try:
    with open(os.path.join(workdir, 'metrics.jsonl')) as f:
      return results, sum(not _is_json(line) for line in f.read().splitlines())
  except OSError:
    return results, -1


def reference(setup: Setup, warmup: bool = True) -> dict:
  """The run never stopped: its final state and metrics, and when it printed its first step."""
  os.makedirs(setup.workroot, exist_ok=True)
  if warmup:  # Prepares the dataset and fills the cache, so that the reference runs what trials run.
    run_to_end(setup, os.path.join(setup.workroot, 'warmup'))
  workdir = os.path.join(setup.workroot, 'reference')
  run = run_to_end(setup, workdir)
  step, state = final_checkpoint(workdir)
  results, bad = read_outputs(workdir)
  if step != setup.steps or results is None or bad:
    raise RuntimeError(f'the reference run ended at step {step}, results.json {"read" if results else "missing"}, '
                       f'{bad} bad metrics.jsonl lines')
  return {'workdir': workdir, 'step': step, 'state': state, 'final': results['final'],
          'first_step_s': run.first_step_s, 'seconds': run.seconds()}


def trial(setup: Setup, ref: dict, index: int, rng: random.Random, phases: list[str],
          require_tmp_cleanup: bool = True, keep_workdir: bool = False) -> dict:
  """Kills a fresh run once per entry of `phases` (as it allows), reruns it to the end, and compares."""
  workdir = os.path.join(setup.workroot, f'trial_{index:03d}')
  shutil.rmtree(workdir, ignore_errors=True)
  record = {'trial': index, 'aimed': list(phases), 'kills': [], 'restarts': [], 'failure': None}
  t0 = time.monotonic()
  leftover = []  # Temporary folders the last kill left behind.
  for kill_number in range(len(phases) + 1):
    run = Run(setup, workdir)
    killed = kill_number < len(phases) and aim(setup, run, phases[kill_number], rng, ref['first_step_s'])
    if killed:
      phase, at = observed_phase(setup, run, listing(workdir)), run.seconds()
      run.kill()
    else:
      try:
        code = run.finish(setup.run_timeout)
      except subprocess.TimeoutExpired:
        run.kill()
        code = 'timeout'
    if kill_number:
      # Judged at the rerun's first line, once its checkpoints are open; not at all if it died before.
      record['restarts'].append({'start_step': run.start_step, 'tmp_from_kill': leftover, 'tmp_left': None
                                 if run.at_header is None else [n for n in leftover if n in run.at_header]})
    if killed:
      names = listing(workdir)
      record['kills'].append({'aimed': phases[kill_number], 'phase': phase, 'at_s': round(at, 2),
                              'start_step': run.start_step, 'last_step': run.last_step, 'checkpoints': names})
      leftover = tmp_folders(names)
      continue
    if code != 0:
      record['failure'] = f'run {kill_number + 1} exited with {code} (resumed at {run.start_step}):\n{run.tail()}'
    break

  record.update(identical=False, same_final_metrics=False, differences=[])
  if record['failure'] is None:
    step, state = final_checkpoint(workdir)
    record['final_step'] = step
    if state is None:
      record['differences'] = ['no checkpoint']
    else:
      record['differences'] = differences(ref['state'], state) + ([] if step == ref['step'] else [f'step {step}'])
    record['identical'] = not record['differences']
    results, record['metrics_jsonl_bad_lines'] = read_outputs(workdir)
    record['results_json'] = results is not None
    record['same_final_metrics'] = results is not None and results.get('final') == ref['final']
  record['tmp_left_after_restarts'] = sum(len(r['tmp_left'] or []) for r in record['restarts'])
  record['checkpoints_at_end'] = listing(workdir)
  record['tmp_at_end'] = tmp_folders(record['checkpoints_at_end'])
  # Where the trainer sets aside checkpoints it could not restore: a kill should never leave one.
  damaged = os.path.join(workdir, 'damaged_checkpoints')
  record['damaged_checkpoints'] = sorted(os.listdir(damaged)) if os.path.isdir(damaged) else []
  record['lost'] = bool(record['failure'] or not record['identical'] or not record['same_final_metrics']
                        or not record.get('results_json') or record.get('metrics_jsonl_bad_lines')
                        or (require_tmp_cleanup and record['tmp_left_after_restarts']))
  record['seconds'] = round(time.monotonic() - t0, 1)
  if not record['lost'] and not keep_workdir:
    shutil.rmtree(workdir, ignore_errors=True)
  return record


def describe(record: dict) -> str:
  kills = ', '.join(f'{k["phase"]}@{k["last_step"] if k["last_step"] is not None else "-"} {k["at_s"]:.1f}s'
                    for k in record['kills'])
  verdict = 'identical' if record['identical'] else 'NOT identical' if record['failure'] is None else 'FAILED'
  return (f'trial {record["trial"]}: {len(record["kills"])} kills ({kills}), {len(record["restarts"])} restarts, '
          f'{verdict}, tmp folders left after restarts {record["tmp_left_after_restarts"]}, '
          f'{record["seconds"]:.0f} s' + (' -- LOST' if record['lost'] else ''))


def summarise(records: list[dict]) -> dict:
  phases, aimed = {}, {}
  for kill in (k for r in records for k in r['kills']):
    phases[kill['phase']] = phases.get(kill['phase'], 0) + 1
    aimed[kill['aimed']] = aimed.get(kill['aimed'], 0) + 1
  return {'trials': len(records), 'kills': sum(phases.values()), 'kills_by_phase': dict(sorted(phases.items())),
          'kills_by_aimed_phase': dict(sorted(aimed.items())),
          'restarts': sum(len(r['restarts']) for r in records),
          'identical': sum(r['identical'] for r in records),
          'failed_to_resume': sum(r['failure'] is not None for r in records),
          'tmp_left_after_restarts': sum(r['tmp_left_after_restarts'] for r in records),
          'trials_with_tmp_left': sum(bool(r['tmp_left_after_restarts']) for r in records),
          'damaged_checkpoints': sum(len(r['damaged_checkpoints']) for r in records),
          'lost': sum(r['lost'] for r in records)}


def provenance() -> dict:
  """The date, the code (commit, and whether the tree differs from it) and the CPU of this measurement."""
  def git(*args):  # --no-optional-locks: reading the tree's state must not write its index.
    return subprocess.run(['git', '--no-optional-locks', *args], cwd=REPO, capture_output=True,
                          text=True).stdout.strip()
  with open('/proc/cpuinfo') as f:
    model = next((line.split(':', 1)[1].strip() for line in f if line.startswith('model name')), 'unknown CPU')
  changed = ' with uncommitted changes' if git('status', '--porcelain') else ''
  return {'date': time.strftime('%Y-%m-%d'), 'machine': f'{os.cpu_count()} x {model}',
          'commit': git('rev-parse', '--short', 'HEAD') + changed}


def write_markdown(report: dict, path: str) -> None:
  """The summary as a Markdown page: command, machine, date, code, and one table."""
  s, trials = report['summary'], report['trials']
  seconds = sorted(r['seconds'] for r in trials) or [0.0]
  tmp_seen = sum(len(r['tmp_from_kill']) for t in trials for r in t['restarts'] if r['tmp_left'] is not None)
  clean = sum(bool(t['same_final_metrics'] and t.get('results_json') and t.get('metrics_jsonl_bad_lines') == 0)
              for t in trials)
  by_phase = {name: ', '.join(f'{k} {v}' for k, v in s[name].items()) for name in ('kills_by_phase',
                                                                                 'kills_by_aimed_phase')}
  rows = [('trials', s['trials']),
          ('kills, by phase seen at the kill', f'{s["kills"]}: {by_phase["kills_by_phase"]}'),
          ('kills, by phase aimed at', by_phase['kills_by_aimed_phase']),
          ('restarts', s['restarts']),
          ('final state bit-identical to the reference', f'{s["identical"]} / {s["trials"]}'),
          ('same final metrics in results.json, every metrics.jsonl line JSON', f'{clean} / {s["trials"]}'),
          ('reruns that failed to resume', s['failed_to_resume']),
          ('temporary folders of interrupted saves still there at a rerun\'s first line',
           f'{s["tmp_left_after_restarts"]} of {tmp_seen} (in {s["trials_with_tmp_left"]} trials)'),
          ('checkpoints set aside as damaged', s['damaged_checkpoints']),
          ('lost', s['lost']),
          ('duration', f'{s["seconds"] / 60:.0f} min in all; a trial {np.median(seconds):.0f} s median '
                       f'({seconds[0]:.0f}-{seconds[-1]:.0f} s)')]
  ref = report['reference']
  counts = {n: sum(len(t['kills']) == n for t in trials) for n in sorted({len(t['kills']) for t in trials})}
  per_trial = ', '.join(f'{n} kill{"s" if n > 1 else ""} in {c} trials' for n, c in counts.items())
  lines = ['# Kill anywhere, resume exactly', '',
           f'Command: `{report["command"]}`', '',
           f'Machine: {report["machine"]}; measured {report["date"]}; code {report["commit"]}.', '',
           f'Each run: `python {report["trainer_command"]}`. Reference (never stopped): {ref["seconds"]:.0f} s, its '
           f'first step printed at {ref["first_step_s"]:.0f} s. Each trial SIGKILLs a fresh run at moments aimed at a '
           f'phase ({per_trial}), reruns it until it exits 0 and compares its final checkpoint with the reference\'s, '
           'leaf by leaf (experiments/kill_resume.py says how). Every record: '
           f'`{os.path.splitext(os.path.basename(path))[0]}.json`.', '',
           '| | |', '|---|---|'] + [f'| {name} | {value} |' for name, value in rows]
  with open(path, 'w') as f:
    f.write('\n'.join(lines) + '\n')


def main(argv=None) -> int:
  parser = runner.Parser(description=__doc__.split('\n\n')[0])
  for name, default in (('trials', 50), ('seed', 0), ('min_kills', 1), ('max_kills', 3), ('steps', 30),
                        ('checkpoint_every', 4), ('eval_every', 10)):
    parser.add_argument(f'--{name}', type=int, default=default)
  parser.add_argument('--out', default=os.path.join(REPO, 'experiments', 'results', 'kill_resume.json'),
                      help='Every record, rewritten after each trial; the summary goes beside it as .md.')
  parser.add_argument('--run_timeout', type=float, default=900.0, help='Seconds one trainer run may take.')
  parser.add_argument('--workroot', default=None, help='Workdirs, dataset and cache (default: a new temporary folder).')
  parser.add_argument('--cache_dir', default=None, help='JAX compilation cache (default: WORKROOT/jax_cache).')
  parser.add_argument('--keep_workdirs', action='store_true', help='Keep the workdirs of trials that were not lost.')
  parser.add_argument('--require_tmp_cleanup', action=argparse.BooleanOptionalAction, default=True,
                      help='Count a temporary folder of an interrupted save still there after a restart as lost.')
  args = parser.parse_args(argv)
  if not 1 <= args.min_kills <= args.max_kills:
    parser.error('need 1 <= --min_kills <= --max_kills')
  from absl import logging  # orbax warns, through absl, that the checkpoints are opened read-only.
  logging.set_verbosity(logging.ERROR)
  workroot = os.path.abspath(args.workroot or tempfile.mkdtemp(prefix='kill_resume_'))
  setup = Setup(workroot, os.path.abspath(args.cache_dir or os.path.join(workroot, 'jax_cache')), args.steps,
                args.checkpoint_every, args.eval_every, run_timeout=args.run_timeout)
  t0 = time.monotonic()
  ref = reference(setup)
  print(f'reference: {setup.steps} steps in {ref["seconds"]:.1f} s, first step at {ref["first_step_s"]:.1f} s '
        f'(workroot {workroot})', flush=True)
  report = {'command': ' '.join(['python', 'experiments/kill_resume.py'] + (argv or sys.argv[1:])), **provenance(),
            'trainer_command': ' '.join(setup.command('WORKDIR')[1:]), 'setup': dataclasses.asdict(setup),
            'reference': {k: v for k, v in ref.items() if k != 'state'}, 'trials': []}
  for index in range(args.trials):
    rng = random.Random(f'{args.seed}-{index}')
    phases = [rng.choice(PHASES) for _ in range(rng.randint(args.min_kills, args.max_kills))]
    record = trial(setup, ref, index, rng, phases, args.require_tmp_cleanup, args.keep_workdirs)
    report['trials'].append(record)
    print(describe(record), flush=True)
    if record['failure']:
      print(record['failure'], flush=True)
    report['summary'] = dict(summarise(report['trials']), seconds=round(time.monotonic() - t0, 1))
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, 'w') as f:  # After every trial: a stopped harness keeps what it measured.
      json.dump(report, f, indent=1)
  summary = report.get('summary') or summarise([])
  print(f'summary: {summary["trials"]} trials, {summary["kills"]} kills '
        f'({", ".join(f"{k} {v}" for k, v in summary["kills_by_phase"].items())}), {summary["restarts"]} restarts, '
        f'{summary["identical"]} identical, {summary["failed_to_resume"]} failed to resume, '
        f'{summary["tmp_left_after_restarts"]} temporary folders left after restarts '
        f'(in {summary["trials_with_tmp_left"]} trials), {summary["damaged_checkpoints"]} damaged checkpoints, '
        f'lost {summary["lost"]}; '
        f'{time.monotonic() - t0:.0f} s in all')
  if report['trials']:
    write_markdown(report, os.path.splitext(args.out)[0] + '.md')
  if not any(r['lost'] for r in report['trials']):
    shutil.rmtree(os.path.join(workroot, 'warmup'), ignore_errors=True)
  return 1 if summary['lost'] else 0


if __name__ == '__main__':
  sys.exit(runner.run(main))
