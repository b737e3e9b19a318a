"""Continue on another process or device count: a run checkpointed by 4 x 2 devices, resumed on 2 x 2, 1 x 1, 4 x 2.

    python experiments/process_count_resume.py --seeds=3 --steps=80
        [--tasks=classification,super_resolution] [--workroot=DIR] [--out=experiments/results/process_count_resume.md]

A run on one process and device count is bit-reproducible, so the only noise to hold a changed
count against is that of other seeds: per task, the same run uninterrupted on 4 processes x 2
simulated CPU devices for each of --seeds seeds gives the noise (the seeds' range and standard
deviation of the final metrics), and seed 0 is then trained again in four sessions of --steps / 4
steps each, on 4 x 2, 2 x 2, 1 x 1 and 4 x 2 (processes x devices per process), every session
resuming the previous one's checkpoint with `--config.num_train_steps` extended (allowed: the
learning rate of the steps taken is unchanged). The same seeds uninterrupted on 1 x 1 show the spread
on another count (each count reads other per-process shares of the data). Printed and written to
--out: every run's final metrics, their spread per group, and whether the resumed run lies within it.
A finished run already in the workroot is read rather than trained again, so a second invocation on
the same --workroot trains only what is missing.

Tasks, offline and small enough for a 2-core CPU:
- classification: CIFAR ResNet-20 + PFCA on scikit-learn's digits (1,437 train, 360 test, 16x16),
  batch 32 (44 steps per epoch: with 80 steps the counts change at steps 20 and 40 of epoch 0 and
  16 of epoch 1), SGD 0.1 after a one-epoch warm-up;
- super_resolution: MSRResNet x2 + PFCA (16 features, 2 blocks) on a DIV2K-shaped dataset of 16 crops of
  scikit-image photos (4 crops of another photo evaluated), HR patches of 32, 7 per image per epoch,
  batch 16 (7 steps per epoch on 1, 2 or 4 processes: the counts change inside epochs 2, 5 and 8), Adam 1e-3.
Every process shares one persistent compilation cache under the workroot.
"""

import importlib.util
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

from pfca_jax.cli import runner

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SESSIONS = ((4, 2), (2, 2), (1, 1), (4, 2))  # (processes, devices per process) of each session of the resumed run.
METRICS = {'classification': ('eval/test/top1', 'eval/test/loss'),
           'super_resolution': ('eval/div2k/psnr_y', 'eval/div2k/ssim_y')}


def task_args(task: str, data_dir: str) -> list[str]:
  """The trainer's flags of one task (the step count, seed and workdir are added per run)."""
  if task == 'classification':
    return ['--config=configs/cifar100_resnet20.py:pfca', '--config.dataset=sklearn_digits',
            f'--config.data_dir={data_dir}', '--config.image_size=16', '--config.crop_padding=2',
            '--config.shuffle_buffer_size=2000', '--config.batch_size=32', '--config.eval_batch_size=360',
            '--config.base_learning_rate=0.4',  # 0.1 at batch 32 (lr_reference_batch_size 128).
            '--config.warmup_epochs=1.0', '--config.weight_decay=5e-4']
  return ['--config=configs/div2k_msrresnet_x2.py:pfca', f'--config.data_dir={data_dir}',
          '--config.model.num_feat=16', '--config.model.num_block=2', '--config.hr_patch_size=32',
          '--config.patches_per_image=7', '--config.batch_size=16', '--config.shuffle_buffer_size=128',
          '--config.base_learning_rate=1e-3', '--config.ema_decay=0.0', '--config.eval_tile=48',
          '--config.eval_tile_overlap=4', '--config.eval_num_samples=0', '--config.cache_train=true']


def prepare_data(task: str, workroot: str) -> str:
  """The task's dataset in WORKROOT, prepared once here so that the processes of a run only read it."""
  data_dir = os.path.join(workroot, f'tfds_{task}')
  if os.path.isdir(data_dir):
    return data_dir
  if task == 'classification':
    from pfca_jax.data import classification, digits
    from pfca_jax.train import config_defaults
    config = config_defaults.classification()
    config.update(dataset=digits.NAME, data_dir=data_dir, image_size=16)
    classification.dataset_info(config)  # The digits prepare themselves on first use.
    return data_dir
  import skimage.data
  from pfca_jax.data import fake_data
  from pfca_jax.imresize import imresize
  rng = np.random.default_rng(0)
  photos = [skimage.data.astronaut(), skimage.data.coffee(), skimage.data.chelsea(), skimage.data.rocket()]

  def crops(photo, n):
    out = []
    for _ in range(n):
      y, x = rng.integers(0, photo.shape[0] - 96), rng.integers(0, photo.shape[1] - 96)
      out.append(np.ascontiguousarray(photo[y:y + 96, x:x + 96]))
    return out

  train = [hr for photo in photos[:3] for hr in crops(photo, 16 // 3 + 1)][:16]
  held_out = crops(photos[3], 4)
  fake_data.write_fake_div2k(data_dir, 2, {'train': [(imresize(hr, 0.5), hr) for hr in train],
                                           'validation': [(imresize(hr, 0.5), hr) for hr in held_out]})
  return data_dir


def free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def session(args: list[str], processes: int, devices: int, cache_dir: str) -> float:
  """One session of `python -m pfca_jax.main ARGS` as PROCESSES processes of DEVICES devices; its seconds."""
  env = dict(os.environ, XLA_FLAGS=f'--xla_force_host_platform_device_count={devices}',
             JAX_COMPILATION_CACHE_DIR=cache_dir, JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS='0',
             TF_CPP_MIN_LOG_LEVEL='2')
  distributed = [f'--coordinator_address=127.0.0.1:{free_port()}', f'--num_processes={processes}']
  t0 = time.monotonic()
  procs = [subprocess.Popen([sys.executable, '-m', 'pfca_jax.main', *args]
                            + (distributed + [f'--process_id={i}'] if processes > 1 else []),
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
           for i in range(processes)]
  try:
    outputs = [p.communicate(timeout=1800)[0] for p in procs]
  finally:
    for p in procs:  # A peer that never connects would leave the others waiting.
      p.kill()
  for p, out in zip(procs, outputs):
    if p.returncode != 0:
      raise RuntimeError(f'{processes} x {devices}: exit status {p.returncode}\n{out[-3000:]}')
  return time.monotonic() - t0


def train(task: str, data_dir: str, workdir: str, seed: int, steps: int, sessions, cache_dir: str) -> dict:
  """A run of STEPS steps in len(SESSIONS) equal sessions on their counts; its final metrics and sessions.

  A workdir that already holds the finished run (an earlier invocation on the same --workroot) is read,
  not trained again: resuming a finished run would add a session to its record.
  """
  path = os.path.join(workdir, 'results.json')
  if not (os.path.exists(path) and len(read(path)['sessions']) == len(sessions) and read(path)['steps'] == steps):
    for i, (processes, devices) in enumerate(sessions):
      end = steps * (i + 1) // len(sessions)
      session(task_args(task, data_dir) + [
          f'--workdir={workdir}', f'--config.seed={seed}', f'--config.num_train_steps={end}',
          f'--config.log_every_steps={steps}', f'--config.eval_every_steps={steps}',
          f'--config.checkpoint_every_steps={steps}'], processes, devices, cache_dir)
  results = read(path)
  return {'final': {name: results['final'][name] for name in METRICS[task]}, 'steps': results['steps'],
          'reference': {k: v for k, v in results['final'].items() if '/bicubic_' in k},  # What SR must beat.
          'sessions': [(s['process_count'], s['device_count'], s['start_step']) for s in results['sessions']]}


def read(path: str) -> dict:
  with open(path) as f:
    return json.load(f)


def spread(values: list[float]) -> dict:
  return {'min': min(values), 'max': max(values), 'mean': statistics.mean(values),
          'std': statistics.stdev(values) if len(values) > 1 else 0.0}


def measure(task: str, seeds: int, steps: int, workroot: str, cache_dir: str) -> dict:
  """Every run of one task, and per metric the spread of the uninterrupted ones: on 4 x 2, on 1 x 1, and all."""
  data_dir = prepare_data(task, workroot)
  runs = {}
  for seed in range(seeds):
    for processes, devices, folder in ((4, 2, f'seed{seed}'), (1, 1, f'one_seed{seed}')):
      label = f'{processes}x{devices} seed {seed}'
      runs[label] = train(task, data_dir, os.path.join(workroot, task, folder), seed, steps, [(processes, devices)],
                          cache_dir)
      print(task, label, runs[label], flush=True)
  runs['resumed seed 0'] = train(task, data_dir, os.path.join(workroot, task, 'resumed'), 0, steps, SESSIONS,
                                 cache_dir)
  print(task, 'resumed seed 0', runs['resumed seed 0'], flush=True)
  groups = {'4x2': [f'4x2 seed {s}' for s in range(seeds)], '1x1': [f'1x1 seed {s}' for s in range(seeds)]}
  groups['all uninterrupted'] = groups['4x2'] + groups['1x1']
  noise = {name: {group: spread([runs[label]['final'][name] for label in labels]) for group, labels in groups.items()}
           for name in METRICS[task]}
  return {'runs': runs, 'noise': noise}


def provenance() -> dict:
  """kill_resume's record of the machine and code, dated to the minute: a measurement here spans hours."""
  return dict(_kill_resume().provenance(), date=time.strftime('%Y-%m-%d %H:%M %Z'))


def _kill_resume():
  spec = importlib.util.spec_from_file_location('kill_resume', os.path.join(REPO, 'experiments', 'kill_resume.py'))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def markdown(report: dict) -> str:
  lines = ['# Continue on another process or device count', '',
           f'Command: `{report["command"]}`', '',
           f'Machine: {report["machine"]} (processes and devices simulated on the CPU); measured {report["date"]}; '
           f'code {report["commit"]}; {report["seconds"] / 60:.0f} min for this invocation.', '',
           f'Each task: {report["steps"]} steps uninterrupted for seeds 0-{report["seeds"] - 1} on 4 processes x 2 '
           'devices (the noise a changed count is held against) and on 1 x 1, and seed 0 resumed through sessions '
           f'of {report["steps"] // len(SESSIONS)} steps on ' + ' then '.join(f'{p} x {d}' for p, d in SESSIONS)
           + ' (experiments/process_count_resume.py says how).']
  for task, result in report['tasks'].items():
    names = METRICS[task]
    lines += ['', f'## {task}', '', '| run | sessions (processes, devices, start step) | ' + ' | '.join(names) + ' |',
              '|---|---|' + '---|' * len(names)]
    for label, run in result['runs'].items():
      sessions = ', '.join(f'({p}, {d}, {s})' for p, d, s in run['sessions'])
      lines.append(f'| {label} | {sessions} | ' + ' | '.join(f'{run["final"][n]:.5f}' for n in names) + ' |')
    lines += ['', '| metric | uninterrupted runs | min | max | range | std | resumed run | within the range |',
              '|---|---|---|---|---|---|---|---|']
    for name in names:
      resumed = result['runs']['resumed seed 0']['final'][name]
      for group, n in result['noise'][name].items():
        lines.append(f'| `{name}` | {group} | {n["min"]:.5f} | {n["max"]:.5f} | {n["max"] - n["min"]:.5f} | '
                     f'{n["std"]:.5f} | {resumed:.5f} | {"yes" if n["min"] <= resumed <= n["max"] else "NO"} |')
    reference = result['runs']['4x2 seed 0']['reference']
    if reference:
      lines += ['', 'Bicubic upscaling of the same images: ' + ', '.join(f'`{k}` {v:.5f}' for k, v in reference.items())
                + '.']
  return '\n'.join(lines) + '\n'


def main(argv=None) -> int:
  parser = runner.Parser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--seeds', type=int, default=3, help='Uninterrupted 4 x 2 runs, seeds 0 to SEEDS - 1.')
  parser.add_argument('--steps', type=int, default=80, help='Steps of every run (a multiple of 4).')
  parser.add_argument('--tasks', default='classification,super_resolution')
  parser.add_argument('--workroot', default=None, help='Data, workdirs and cache (default: a new temporary folder).')
  parser.add_argument('--out', default=os.path.join(REPO, 'experiments', 'results', 'process_count_resume.md'))
  args = parser.parse_args(argv)
  tasks = [t for t in args.tasks.split(',') if t]
  if args.steps % len(SESSIONS) or args.seeds < 2 or not set(tasks) <= set(METRICS):
    parser.error(f'need --steps a multiple of {len(SESSIONS)}, --seeds >= 2 and --tasks among {", ".join(METRICS)}')
  workroot = os.path.abspath(args.workroot or tempfile.mkdtemp(prefix='process_count_resume_'))
  cache_dir = os.path.join(workroot, 'jax_cache')
  t0 = time.monotonic()
  report = {'command': ' '.join(['python', 'experiments/process_count_resume.py'] + (argv or sys.argv[1:])),
            **provenance(), 'seeds': args.seeds, 'steps': args.steps, 'tasks': {}}
  for task in tasks:
    report['tasks'][task] = measure(task, args.seeds, args.steps, workroot, cache_dir)
  report['seconds'] = time.monotonic() - t0
  text = markdown(report)
  print(text)
  os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
  with open(args.out, 'w') as f:
    f.write(text)
  return 0


if __name__ == '__main__':
  sys.exit(runner.run(main))
