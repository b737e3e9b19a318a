"""From JAX to PyTorch and back on real data: the digits quick start's `none` run, exported, scored by PyTorch,
imported back and fine-tuned with PFCA inserted.

    python experiments/torch_bridge.py --out=experiments/results/torch_bridge.json

Steps, each through the commands a user types (subprocesses), and what is measured:
1. `python -m pfca_jax.main --config=configs/quickstart.py --config.compare_attentions=none`: ResNet-20 on the
   scikit-learn digits, 30 epochs; its test top-1 as the trainer reports it.
2. `python -m pfca_jax.convert to_torch`: the run's weights as a state dict; loaded with strict=True into
   the PyTorch definition of SimAM's CIFAR ResNet-20 (`pfca_jax.convert.torch_models`) and scored by
   PyTorch on the same 360 preprocessed test digits: correct count and the largest logit difference.
3. `python -m pfca_jax.convert from_torch ... --config=configs/quickstart.py`, once with `none` and once
   with PFCA inserted: both folders scored by JAX (the PFCA one before any training).
4. `python -m pfca_jax.main ... --config.init_from=<the PFCA folder>` for `--epochs` epochs at a tenth of the
   learning rate (and the same fine-tuning with `none` as the control): their test top-1.
Writes the JSON and a Markdown table beside it (same name, .md), with the machine, date and command.
"""

import datetime
import json
import os
import subprocess
import sys
import tempfile

import numpy as np

from pfca_jax.cli import runner

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QUICKSTART = os.path.join(REPO, 'configs', 'quickstart.py')


def run(*args: str) -> str:
  """Runs `python -m ...args` from the repository root; its stdout, or the failure with its stderr."""
  result = subprocess.run([sys.executable, '-m', *args], cwd=REPO, capture_output=True, text=True)
  if result.returncode != 0:
    raise SystemExit(f'failed ({result.returncode}): {" ".join(args)}\n{result.stderr[-3000:]}')
  return result.stdout


def test_batches():
  """The 360 preprocessed test digits and labels, exactly as the trainer's evaluation reads them."""
  from pfca_jax import data
  config = load_config()
  pipe = data.pipeline(config)
  info = pipe.dataset_info(config)
  images, labels = [], []
  batches, _ = pipe.eval_iterator(config, info)
  for batch in batches:
    mask = np.asarray(batch['mask']).astype(bool)
    images.append(np.asarray(batch['image'])[mask])
    labels.append(np.asarray(batch['label'])[mask])
  return np.concatenate(images), np.concatenate(labels)


def load_config(attention: str = 'none'):
  import importlib.util
  spec = importlib.util.spec_from_file_location('quickstart', QUICKSTART)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(attention)


def jax_logits(folder: str, images: np.ndarray) -> np.ndarray:
  """Logits of the weights in a converted folder, read as pfca_jax.predict reads a run (pfca_jax.run_folder)."""
  import jax
  from pfca_jax import run_folder
  from pfca_jax.data.classification import get_spec
  config = run_folder.open_run(folder, 'classification')
  model = run_folder.create_model(config, get_spec(config.dataset))
  variables = run_folder.restore_variables(folder, model, (1, *images.shape[1:]))
  return np.asarray(jax.jit(lambda v, x: model.apply(v, x, train=False))(variables, images))


def torch_logits(path: str, images: np.ndarray) -> np.ndarray:
  import torch
  from pfca_jax.convert import torch_models
  model = torch_models.cifar_resnet('cifar_resnet20', num_classes=10)
  model.load_state_dict(torch.load(path, weights_only=True), strict=True)
  with torch.no_grad():
    return model.eval()(torch.from_numpy(images.transpose(0, 3, 1, 2).copy())).numpy()


def top1(workdir: str) -> float:
  with open(os.path.join(workdir, 'results.json')) as f:
    return json.load(f)['final']['eval/test/top1']


def main(argv=None) -> None:
  parser = runner.Parser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--out', default=os.path.join(REPO, 'experiments', 'results', 'torch_bridge.json'))
  parser.add_argument('--epochs', type=float, default=5.0, help='Fine-tuning epochs (default 5).')
  parser.add_argument('--work', default=None, help='Folder for the runs (default: a temporary one).')
  args = parser.parse_args(argv)
  work = args.work or tempfile.mkdtemp(prefix='torch_bridge_')
  quick = ['--config.compare_attentions=none']
  start = datetime.datetime.now(datetime.timezone.utc)

  run('pfca_jax.main', f'--config={QUICKSTART}', f'--workdir={work}/trained', *quick)
  trained = os.path.join(work, 'trained', 'none')
  pth = os.path.join(work, 'none.pth')
  run('pfca_jax.convert', 'to_torch', f'--workdir={trained}', f'--out={pth}')
  folders = {}
  for attention in ('none', 'pfca'):
    folders[attention] = os.path.join(work, f'imported_{attention}')
    run('pfca_jax.convert', 'from_torch', f'--file={pth}', '--model=cifar_resnet20', f'--attention={attention}',
        f'--config={QUICKSTART}', f'--out={folders[attention]}')

  from pfca_jax.bench import timing
  images, labels = test_batches()
  jax_out, torch_out = jax_logits(folders['none'], images), torch_logits(pth, images)
  pfca_out = jax_logits(folders['pfca'], images)
  correct = lambda logits: int(np.sum(np.argmax(logits, -1) == labels))

  finetuned = {}
  lr = load_config().base_learning_rate / 10
  for attention in ('pfca', 'none'):
    workdir = os.path.join(work, f'finetuned_{attention}')
    run('pfca_jax.main', f'--config={QUICKSTART}', f'--workdir={workdir}', f'--config.compare_attentions={attention}',
        f'--config.init_from={folders[attention]}', f'--config.num_epochs={args.epochs}', '--config.warmup_epochs=0',
        f'--config.base_learning_rate={lr}', f'--config.eval_every_epochs={args.epochs}',
        f'--config.checkpoint_every_epochs={args.epochs}')
    finetuned[attention] = top1(os.path.join(workdir, attention))

  n = len(labels)
  results = {
      'test_images': n,
      'trained_none_top1_jax_trainer': top1(trained),
      'exported_none_correct_pytorch': correct(torch_out),
      'imported_none_correct_jax': correct(jax_out),
      'max_logit_difference_pytorch_vs_jax': float(np.max(np.abs(torch_out - jax_out))),
      'logit_scale': float(np.max(np.abs(torch_out))),
      'pfca_inserted_correct_before_finetuning': correct(pfca_out),
      'finetune_epochs': args.epochs, 'finetune_base_learning_rate': lr,
      'finetuned_pfca_top1': finetuned['pfca'], 'finetuned_none_top1': finetuned['none'],
      'same_predictions_pytorch_vs_jax': int(np.sum(np.argmax(torch_out, -1) == np.argmax(jax_out, -1))),
      'machine': timing.machine(),
      'date': start.strftime('%Y-%m-%d'), 'wall_time_s': (datetime.datetime.now(datetime.timezone.utc) - start).seconds,
      'command': 'python ' + ' '.join(sys.argv), 'work': work,
  }
  os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
  with open(args.out, 'w') as f:
    json.dump(results, f, indent=2)
  with open(os.path.splitext(args.out)[0] + '.md', 'w') as f:
    f.write(markdown(results))
  print(markdown(results))


def markdown(r: dict) -> str:
  n = r['test_images']
  pct = lambda correct: f'{100 * correct / n:.2f}% ({correct}/{n})'
  return f"""# From JAX to PyTorch and back: the digits quick start

{r['date']}, {r['machine']}; {r['wall_time_s']} s. Command: `{r['command']}`

CIFAR ResNet-20 trained on the scikit-learn digits by the quick start (`none`, 30 epochs), its weights
written by `python -m pfca_jax.convert to_torch`, loaded with `strict=True` into the PyTorch definition of
SimAM's CIFAR ResNet-20 and scored by PyTorch, read back by `from_torch`, and fine-tuned with PFCA inserted
through `--config.init_from` ({r['finetune_epochs']:g} epochs, base learning rate {r['finetune_base_learning_rate']:g},
cosine, no warm-up; `none` fine-tuned the same way as the control). All on the same {n} test digits, one seed.

| weights | scored by | test top-1 |
|---|---|---|
| trained, `none` | the JAX trainer (results.json) | {100 * r['trained_none_top1_jax_trainer']:.2f}% |
| exported to PyTorch | PyTorch | {pct(r['exported_none_correct_pytorch'])} |
| imported back (`from_torch`) | JAX | {pct(r['imported_none_correct_jax'])} |
| imported back, PFCA inserted, before fine-tuning | JAX | {pct(r['pfca_inserted_correct_before_finetuning'])} |
| PFCA inserted, fine-tuned | the JAX trainer | {100 * r['finetuned_pfca_top1']:.2f}% |
| `none`, fine-tuned the same way (control) | the JAX trainer | {100 * r['finetuned_none_top1']:.2f}% |

PyTorch and JAX predict the same digit for {r['same_predictions_pytorch_vs_jax']} of the {n} test images; the largest
difference between their logits is {r['max_logit_difference_pytorch_vs_jax']:.2e} (largest logit magnitude
{r['logit_scale']:.2f}). Inserting PFCA into the trained network changes its function (every channel is scaled
by a sigmoid of at least 0.62, more for channels far from the mean), hence the accuracy before fine-tuning.
"""


if __name__ == '__main__':
  sys.exit(runner.run(main))
