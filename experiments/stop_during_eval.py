"""How long SIGTERM takes to end a running evaluation: the time a preemption's grace period must cover.

For each quick start (classification on the digits, super-resolution on the skimage photos), a first
run is not stopped: its first evaluation's duration (compilation included) is the reference. Then
runs are stopped with SIGTERM at several fractions of that duration after the evaluation has started
(the log line of its step is printed just before it). Printed per moment: the seconds from the signal to
the trainer's "checkpoint of step N saved" line and to the process's exit, its exit status (143 is
128 + SIGTERM), and whether the resumed run then evaluated that step first. One uninterrupted
evaluation of the same run gives the time the stop saves.

    python experiments/stop_during_eval.py [--fractions=0.1,0.5,0.9] [--out=experiments/results/stop_during_eval.json]
"""

import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time

from pfca_jax.cli import runner

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

RUNS = {
    'classification (digits, ResNet-20)': [
        '--config=configs/quickstart.py', '--config.compare_attentions=pfca', '--config.num_epochs=0',
        '--config.num_train_steps=10', '--config.log_every_steps=5', '--config.eval_every_steps=5',
        '--config.eval_every_epochs=0', '--config.checkpoint_every_steps=10', '--config.checkpoint_every_epochs=0',
        '--config.eval_batch_size=40'],
    'super-resolution (skimage photos, MSRResNet x2)': [
        '--config=configs/quickstart_sr.py', '--config.compare_attentions=pfca', '--config.num_train_steps=10',
        '--config.lr_restart_periods=(10,)', '--config.log_every_steps=5', '--config.eval_every_steps=5',
        '--config.checkpoint_every_steps=10'],
}


def run(args: list[str], workdir: str, stop_after: float | None):
  """Runs the trainer; with stop_after, SIGTERM that many seconds after the first 'step 5/' line.

  Returns (exit status, seconds from the signal to the 'saved' line, to the exit, output).
  """
  command = [sys.executable, '-m', 'pfca_jax.main', f'--workdir={workdir}', *args]
  proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
  lines, sent, saved = [], [None], [None]

  def signal_later():
    time.sleep(stop_after)
    sent[0] = time.perf_counter()
    proc.send_signal(signal.SIGTERM)

  for line in proc.stdout:
    lines.append(line)
    if stop_after is not None and sent[0] is None and line.startswith('step 5/') and not any(
        t.name == 'stopper' for t in threading.enumerate()):
      threading.Thread(target=signal_later, name='stopper', daemon=True).start()
    if 'checkpoint of step' in line and saved[0] is None:
      saved[0] = time.perf_counter()
  status = proc.wait()
  ended = time.perf_counter()
  output = ''.join(lines)
  if sent[0] is None:
    return status, None, None, output
  return status, (saved[0] - sent[0]) if saved[0] else None, ended - sent[0], output


def main(argv=None):
  parser = runner.Parser(description=__doc__.splitlines()[0])
  parser.add_argument('--fractions', default='0.1,0.5,0.9',
                      help="when to stop, as fractions of the uninterrupted evaluation's duration, comma-separated")
  parser.add_argument('--out', default=None, help='a JSON file for the records')
  args = parser.parse_args(argv)
  fractions = [float(f) for f in args.fractions.split(',')]
  records = []
  for name, flags in RUNS.items():
    with tempfile.TemporaryDirectory() as tmp:
      status, _, _, output = run(flags, os.path.join(tmp, 'straight'), None)
      evals = [float(s) for s in re.findall(r'eval \S+ at step 5: .*\(([\d.]+) s\)', output)]
      print(f'{name}: uninterrupted evaluation at step 5 took {sum(evals):.1f} s (exit {status})', flush=True)
      for fraction in fractions:
        delay = fraction * sum(evals)
        workdir = os.path.join(tmp, f'stopped_{delay}')
        status, to_saved, to_exit, output = run(flags, workdir, delay)
        interrupted = 'the evaluation it interrupted runs first' in output
        resumed_status, _, _, resumed = run(flags, workdir, None)
        first_eval = re.search(r'eval \S+ at step (\d+)', resumed)
        record = dict(run=name, fraction=fraction, delay_s=delay, exit_status=status, to_saved_s=to_saved, to_exit_s=to_exit,
                      eval_interrupted=interrupted, uninterrupted_eval_s=sum(evals),
                      resumed_exit_status=resumed_status,
                      resumed_first_eval_step=int(first_eval.group(1)) if first_eval else None)
        records.append(record)
        print(f'  SIGTERM {delay:.1f} s ({fraction:.0%}) into the evaluation: exit {status}, checkpoint saved after '
              f'{to_saved if to_saved is None else round(to_saved, 2)} s, exited after '
              f'{to_exit if to_exit is None else round(to_exit, 2)} s, evaluation interrupted: {interrupted}; '
              f'resumed: exit {resumed_status}, first evaluation at step {record["resumed_first_eval_step"]}',
              flush=True)
  if args.out:
    with open(args.out, 'w') as f:
      json.dump(records, f, indent=2)


if __name__ == '__main__':
  sys.exit(runner.run(main))
