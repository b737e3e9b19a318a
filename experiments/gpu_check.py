"""The trainer checked where users run it: train, kill, resume and time it on synthetic data, without TensorFlow.

    python experiments/gpu_check.py --out=DIR [--seconds=480] [--networks=resnet50,msrresnet_x4] [--small]

(experiments/gpu_check.sh runs it on a GPU machine.) For each network, on `config.dataset='synthetic'`
(generated batches: no files, no TensorFlow, the input never the bottleneck), with PFCA, bfloat16:

1. run: `python -m pfca_jax.main` for --steps steps (ResNet-50: batch 256 at 224 px; MSRResNet x4: batch
   128 of 128 px HR patches), a checkpoint half-way and at the end, an evaluation at the end. The
   trainer's images/s is results.json's train_images_per_sec (median of the log intervals after the
   first, over their steps and waits for input); its time_breakdown and goodput are kept too.
2. kill/resume: the same command in a new workdir, SIGKILLed (its whole process group) once the
   half-way checkpoint is on disk and a log interval later, then rerun to the end: its final checkpoint
   (parameters, optimiser state, BatchNorm statistics, step) must equal run 1's bit for bit.
3. bench: `python -m pfca_jax.bench` for the same network, attention, dtype, batch and input: the
   training step alone. loop cost = 1 - trainer / bench (the goal: at most 3%).

Every process shares one persistent compilation cache (OUT/jax_cache), so the killed and resumed
processes load run 1's executables, the same autotuned kernels, instead of compiling their own.
--small shrinks everything (ResNet-18 at 64 px, batch 8; MSRResNet x4 on 64 px HR patches, batch 4) to check
the script on a CPU in a few minutes. Writes OUT/<network>_<part>.log, OUT/gpu_check.json and a table
on stdout; exit status 1 when a resume was not exact or a part failed.
"""

import json
import os
import signal
import subprocess
import sys
import time

from pfca_jax.cli import runner

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# network -> (config, bench name, trainer overrides, bench flags) at full size and with --small.
NETWORKS = {
    'resnet50': {
        'full': ('configs/imagenet_resnet50.py:pfca', 'resnet50',
                 ['batch_size=256', 'eval_batch_size=512', 'synthetic.eval_examples=2048'], ['--batch_size=256']),
        'small': ('configs/imagenet_resnet18.py:pfca', 'resnet18',
                  ['batch_size=8', 'eval_batch_size=8', 'image_size=64', 'eval_resize_size=64',
                   'synthetic.eval_examples=16', 'synthetic.num_classes=10'], ['--batch_size=8', '--side=64']),
    },
    'msrresnet_x4': {
        'full': ('configs/div2k_msrresnet_x4.py:pfca', 'msrresnet_x4', ['batch_size=128'], ['--batch_size=128']),
        'small': ('configs/div2k_msrresnet_x4.py:pfca', 'msrresnet_x4', ['batch_size=4', 'hr_patch_size=64'],
                  ['--batch_size=4', '--side=16']),
    },
}


def dtype(size: str) -> str:
  return 'float32' if size == 'small' else 'bfloat16'  # bfloat16 is slow to emulate on a CPU.


def trainer_command(network: str, size: str, workdir: str, steps: int) -> list[str]:
  config, _, overrides, _ = NETWORKS[network][size]
  half, log_every = steps // 2, max(1, steps // 12)
  overrides = ['dataset=synthetic', f'model.dtype={dtype(size)}', f'num_train_steps={steps}',
               f'log_every_steps={log_every}', f'eval_every_steps={steps}', f'checkpoint_every_steps={half}',
               *overrides]
  return [sys.executable, '-m', 'pfca_jax.main', f'--config={config}', f'--workdir={workdir}',
          *[f'--config.{item}' for item in overrides]]


def bench_command(network: str, size: str, out_json: str) -> list[str]:
  _, bench, _, flags = NETWORKS[network][size]
  return [sys.executable, '-m', 'pfca_jax.bench', f'--benchmarks={bench}', '--attentions=pfca', f'--dtype={dtype(size)}',
          '--rounds=5', '--steps=5', '--round_seconds=1', '--torch=off', f'--json={out_json}', *flags]


class Deadline:

  def __init__(self, seconds: float):
    self.end = time.monotonic() + seconds

  def left(self) -> float:
    return self.end - time.monotonic()


def run_logged(command: list[str], log_path: str, deadline: Deadline, kill_when=None) -> dict:
  """Runs `command` with its output in `log_path`; kill_when(line) -> True SIGKILLs its process group."""
  t0 = time.monotonic()
  killed = False
  with open(log_path, 'w') as log:
    log.write('$ ' + ' '.join(command) + '\n')
    log.flush()
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               start_new_session=True, env=dict(os.environ, PYTHONUNBUFFERED='1'))
    try:
      for line in process.stdout:
        log.write(line)
        log.flush()
        if kill_when is not None and not killed and kill_when(line):
          os.killpg(process.pid, signal.SIGKILL)
          killed = True
        if deadline.left() < 0:
          os.killpg(process.pid, signal.SIGKILL)
          raise TimeoutError(f'out of time during {log_path}')
      returncode = process.wait()
    finally:
      if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)
  return {'returncode': returncode, 'seconds': round(time.monotonic() - t0, 1), 'killed': killed}


def results(workdir: str) -> dict:
  with open(os.path.join(workdir, 'results.json')) as f:
    return json.load(f)


def compare_checkpoints(first: str, second: str) -> dict:
  """Both runs' latest checkpoints read back on the CPU (not to take accelerator memory), compared bit for bit."""
  code = f'''
import json, jax, numpy as np
from pfca_jax.train import checkpointing
def latest(workdir):
  with checkpointing.reading(workdir) as (manager, step):
    return step, jax.tree.map(np.asarray, jax.device_get(checkpointing.restore(manager, step)[0]))
(s1, a), (s2, b) = latest({first!r}), latest({second!r})
leaves = list(zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True))
same = jax.tree.structure(a) == jax.tree.structure(b) and all(
    x.dtype == y.dtype and x.shape == y.shape and x.tobytes() == y.tobytes() for x, y in leaves)
print(json.dumps({{'steps': [s1, s2], 'bit_identical': bool(same), 'arrays': len(leaves)}}))
'''
  done = subprocess.run([sys.executable, '-c', code], cwd=REPO, capture_output=True, text=True,
                        env=dict(os.environ, JAX_PLATFORMS='cpu'))
  if done.returncode != 0:
    return {'bit_identical': False, 'error': done.stderr[-2000:]}
  return json.loads(done.stdout.strip().splitlines()[-1])


def check_network(network: str, size: str, steps: int, out: str, deadline: Deadline) -> dict:
  row = {'network': network, 'model': NETWORKS[network][size][1], 'steps': steps}
  first, second = os.path.join(out, f'{network}_run'), os.path.join(out, f'{network}_killed')
  run = run_logged(trainer_command(network, size, first, steps), os.path.join(out, f'{network}_run.log'), deadline)
  row['run'] = run
  if run['returncode'] != 0:
    return row
  done = results(first)
  row.update(trainer_images_per_sec=done['train_images_per_sec'], final=done['final'], params=done['params'],
             time_breakdown=done.get('time_breakdown'), goodput=done.get('goodput'))

  half, log_every = steps // 2, max(1, steps // 12)
  checkpoint = os.path.join(second, 'checkpoints', str(half))

  def after_half_way_checkpoint(line: str) -> bool:
    # A log line past the half-way step, once that step's checkpoint is renamed into place (saved).
    if not line.startswith('step '):
      return False
    step = int(line.split()[1].split('/')[0])
    return step >= half + log_every and os.path.isdir(checkpoint)

  command = trainer_command(network, size, second, steps)
  row['killed'] = run_logged(command, os.path.join(out, f'{network}_killed.log'), deadline, after_half_way_checkpoint)
  row['resumed'] = run_logged(command, os.path.join(out, f'{network}_resumed.log'), deadline)
  if row['resumed']['returncode'] == 0:
    row['resume'] = compare_checkpoints(first, second)

  bench_json = os.path.join(out, f'{network}_bench.json')
  row['bench_run'] = run_logged(bench_command(network, size, bench_json), os.path.join(out, f'{network}_bench.log'),
                                deadline)
  if row['bench_run']['returncode'] == 0:
    with open(bench_json) as f:
      bench = json.load(f)['rows'][0]
    row['bench_images_per_sec'] = bench['examples_per_s']
    row['loop_cost'] = 1 - row['trainer_images_per_sec'] / bench['examples_per_s']
  return row


def main(argv=None) -> int:
  parser = runner.Parser(description=__doc__.splitlines()[0])
  parser.add_argument('--out', required=True)
  parser.add_argument('--seconds', type=float, default=480, help='time for everything; a part past it is killed')
  parser.add_argument('--networks', default='resnet50,msrresnet_x4')
  parser.add_argument('--steps', type=int, default=None, help='default 300 (24 with --small)')
  parser.add_argument('--small', action='store_true', help='shrunk networks and batches, to check on a CPU')
  args = parser.parse_args(argv)
  size = 'small' if args.small else 'full'
  steps = args.steps or (24 if args.small else 300)
  networks = args.networks.split(',')
  for network in networks:
    if network not in NETWORKS:
      parser.error(f'unknown network {network!r}; accepted: {", ".join(NETWORKS)}')
  os.makedirs(args.out, exist_ok=True)
  os.environ.setdefault('JAX_COMPILATION_CACHE_DIR', os.path.join(os.path.abspath(args.out), 'jax_cache'))
  os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', '0')
  deadline = Deadline(args.seconds)
  report = {'date': time.strftime('%Y-%m-%d'), 'size': size, 'command': ' '.join(sys.argv), 'rows': []}
  failed = False
  for network in networks:
    try:
      row = check_network(network, size, steps, args.out, deadline)
    except TimeoutError as e:
      row, failed = {'network': network, 'error': str(e)}, True
    report['rows'].append(row)
    failed |= not row.get('resume', {}).get('bit_identical', False) or 'loop_cost' not in row
    with open(os.path.join(args.out, 'gpu_check.json'), 'w') as f:
      json.dump(report, f, indent=2)
  print(f'{"network":14} {"trainer img/s":>14} {"bench img/s":>12} {"loop cost":>9} {"resume exact":>12}')
  for row in report['rows']:
    trainer, bench = row.get('trainer_images_per_sec'), row.get('bench_images_per_sec')
    print(f'{row.get("model", row["network"]):14} {trainer or float("nan"):14,.1f} {bench or float("nan"):12,.1f} '
          f'{row.get("loop_cost", float("nan")):9.1%} {str(row.get("resume", {}).get("bit_identical")):>12}')
  return 1 if failed else 0


if __name__ == '__main__':
  sys.exit(runner.run(main))
