"""Parameter count and forward FLOPs of any model, for every attention side by side.

    python -m pfca_jax.models.summary --model=resnet50 --attentions=all

FLOPs come from XLA's cost analysis of the jitted inference forward pass
(``jax.jit(apply).lower(...).cost_analysis()``), i.e. of the program before
backend-specific optimisation, so the figure is the model's, not one compiler's.
XLA counts a multiply-add as 2 FLOPs and skips the taps that fall on zero padding,
so ResNet-50 at 224 is 7.95 GFLOPs here against the 4.1 GMACs (8.2 GFLOPs with
padding) usually quoted. Nothing is compiled or run: parameters are counted from
`jax.eval_shape`, so even the largest network is summarised in about a second.
"""

import json
import sys
from typing import Any, Sequence

import jax
import jax.numpy as jnp

from pfca_jax import models
from pfca_jax.cli import runner
from pfca_jax.errors import UserError
from pfca_jax.models.attention import ATTENTIONS


def default_input_size(name: str) -> int:
  """The input side the network is usually quoted at: 224 (ImageNet), 32 (CIFAR), 64 (SR low-res input)."""
  if name.startswith('cifar_'):
    return 32
  return 64 if name == 'msrresnet' else 224


def summarize(model, input_shape: Sequence[int], dtype: Any = jnp.float32) -> dict:
  """Returns {'params': int, 'flops': float} of `model` applied to one batch of `input_shape` (NHWC).

  FLOPs are those of the definitions (`attention_impl='reference'`: flax's convolutions and
  BatchNorm, each attention as defined), so they do not depend on the lowering a platform gets:
  a fused PFCA would hide in BatchNorm's affine.
  """
  model = model.clone(attention_impl='reference') if hasattr(model, 'attention_impl') else model
  x = jax.ShapeDtypeStruct(tuple(input_shape), dtype)
  variables = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros(x.shape, x.dtype)))
  lowered = jax.jit(lambda v, inp: model.apply(v, inp, train=False)).lower(variables, x)
  cost = lowered.cost_analysis()
  if isinstance(cost, (list, tuple)):  # Older jax returned one dict per device program.
    cost = cost[0]
  return {'params': models.count_params(variables.get('params', {})), 'flops': float(cost['flops'])}


def compare(name: str, attentions: Sequence[str], input_shape: Sequence[int], **options) -> list[dict]:
  """Summaries of model `name` with each attention, each with its growth over 'none' when 'none' is included."""
  rows = []
  for attention in attentions:
    row = {'model': name, 'attention': attention, 'input_shape': list(input_shape)}
    row.update(summarize(models.create(name, attention=attention, **options), input_shape))
    rows.append(row)
  base = next((r for r in rows if r['attention'] == 'none'), None)
  for row in rows:
    if base is not None:
      row['params_added'] = row['params'] - base['params']
      row['flops_growth'] = row['flops'] / base['flops'] - 1.0
  return rows


def format_table(rows: Sequence[dict]) -> str:
  has_base = 'params_added' in rows[0]
  header = f'{"attention":<10} {"params":>12} {"GFLOPs":>10}'
  if has_base:
    header += f' {"params added":>13} {"FLOPs growth":>13}'
  lines = [header, '-' * len(header)]
  for r in rows:
    line = f'{r["attention"]:<10} {r["params"]:>12,} {r["flops"] / 1e9:>10.4f}'
    if has_base:
      line += f' {r["params_added"]:>+13,} {100 * r["flops_growth"]:>+12.3f}%'
    lines.append(line)
  return '\n'.join(lines)


def _parse_attentions(text: str) -> list[str]:
  names = list(ATTENTIONS) if text == 'all' else [a.strip() for a in text.split(',') if a.strip()]
  bad = [a for a in names if a not in ATTENTIONS]
  if bad or not names:
    raise UserError(f'--attentions={text!r}: unknown attention {",".join(bad) or text!r}; valid: '
                    f'{", ".join(ATTENTIONS)}, or all')
  return names


def _parse_size(text: str) -> tuple[int, int]:
  try:
    parts = [int(p) for p in text.lower().split('x')]
  except ValueError:
    parts = []
  if len(parts) == 1:
    parts = parts * 2
  if len(parts) != 2 or min(parts) < 1:
    raise UserError(f'--input_size={text!r} is not a positive size; give N or HxW, e.g. 224 or 720x1280')
  return parts[0], parts[1]


def parser() -> runner.Parser:
  p = runner.Parser('python -m pfca_jax.models.summary',
                    'Parameters and forward GFLOPs (XLA cost analysis) of a model with each attention.',
                    renamed={'--attention': 'use --attentions=NAME[,NAME...] or --attentions=all'})
  p.add_argument('--model', required=True, choices=list(models.MODELS), metavar='MODEL',
                 help=f'one of: {", ".join(models.MODELS)}')
  p.add_argument('--attentions', default='all',
                 help=f'a comma-separated list, or all (default); none is always included as the '
                      f'baseline. Names: {", ".join(ATTENTIONS)}')
  p.add_argument('--input_size', default=None,
                 help='input side N or HxW (default: 224 ImageNet, 32 CIFAR, 64 MSRResNet low-res input)')
  p.add_argument('--batch_size', type=int, default=1)
  p.add_argument('--scale', type=int, default=None, help='MSRResNet upscaling factor (2, 3, 4; default 4)')
  p.add_argument('--num_classes', type=int, default=None, help='classifier width (default: the dataset\'s)')
  p.add_argument('--json', default=None, metavar='PATH', help='also write the rows as JSON to PATH')
  return p


def main(argv: Sequence[str] | None = None) -> int:
  """The command's exit status: 0, or 2 after one `error: ...` line (also when called from Python)."""
  return runner.run(_summary, argv)


def _summary(argv: Sequence[str] | None) -> None:
  args = parser().parse_args(argv)
  attentions = _parse_attentions(args.attentions)
  if 'none' not in attentions:  # Growth is only meaningful against the plain network.
    attentions.insert(0, 'none')
  size = _parse_size(args.input_size or str(default_input_size(args.model)))
  if args.batch_size < 1:
    raise UserError(f'--batch_size={args.batch_size} must be >= 1')
  options = {}
  if args.scale is not None:
    options['scale'] = args.scale
  try:
    rows = compare(args.model, attentions, (args.batch_size, *size, 3), num_classes=args.num_classes, **options)
  except ValueError as e:  # Bad option values (e.g. --scale 5) are the user's, not a crash.
    raise UserError(str(e)) from None
  print(f'{args.model} at input {args.batch_size}x{size[0]}x{size[1]}x3 (forward, inference mode; '
        'GFLOPs from XLA cost analysis, 1 multiply-add = 2 FLOPs)')
  print(format_table(rows))
  if args.json:
    with open(args.json, 'w') as f:
      json.dump(rows, f, indent=2)


if __name__ == '__main__':
  sys.exit(main())
