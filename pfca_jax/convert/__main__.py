"""Command line: PyTorch checkpoints to converted folders, and trained runs to PyTorch checkpoints.

    python -m pfca_jax.convert from_torch --file=resnet50.pth --model=resnet50 --attention=pfca --out=DIR
    python -m pfca_jax.convert from_torch --file=MSRResNet_x4.pth --model=msrresnet --scale=4 --out=DIR
    python -m pfca_jax.convert to_torch --workdir=RUN --out=weights.pth

`from_torch` reads torchvision's weights, a BasicSR checkpoint (`params_ema` preferred, else `params`)
or any state dict of the same names, and writes a folder that `python -m pfca_jax.predict ... --workdir=DIR`
and `--config.init_from=DIR` read. The network's size (classes; MSRResNet's scale, width and depth) is
read from the file; --scale, when given, must agree. --config takes the config the weights will be used
with (its dataset and preprocessing go into the folder); without it, the model's standard recipe
(ImageNet, CIFAR-100, DIV2K), or --dataset for another dataset.

`to_torch` writes the weights of a run's newest checkpoint (its moving average when the run kept one) as a
state dict that torchvision's / SimAM's reference / BasicSR's definition loads with strict=True; MSRResNet's
in BasicSR's layout, {'params': ..., 'params_ema': ...}. Reading and writing .pth files needs PyTorch.
Every mistake ends with one `error: ...` line and exit status 2.
"""

import importlib.util
import os
import sys
import warnings

from pfca_jax import run_folder
from pfca_jax.cli import runner
from pfca_jax.errors import UserError


def _load_config(argument: str):
  """get_config(ARG) of 'FILE.py[:ARG]'."""
  path, _, arg = argument.partition(':')
  if not (os.path.isfile(path) and path.endswith('.py')):
    raise UserError(f'--config={path!r} is not a Python config file (e.g. configs/quickstart.py)')
  spec = importlib.util.spec_from_file_location('converted_config', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg or None)


def _default_config(model: str, options: dict):
  from pfca_jax.train import config_defaults
  if model == 'msrresnet':
    config = config_defaults.super_resolution(options['scale'])
    config.model.num_feat, config.model.num_block = options['num_feat'], options['num_block']
  else:
    config = config_defaults.classification() if model.startswith('cifar_') else config_defaults.imagenet()
  config.model.name = model
  return config


def from_torch(args) -> None:
  from pfca_jax import convert, models
  from pfca_jax.convert import recognise, torch_files
  from pfca_jax.models import MODELS
  from pfca_jax.models.attention import ATTENTIONS
  if args.model not in MODELS:
    raise UserError(f'--model={args.model!r} is not a model; valid: {", ".join(MODELS)}')
  if args.attention not in ATTENTIONS:
    raise UserError(f'--attention={args.attention!r} is not an attention; valid: {", ".join(ATTENTIONS)}')
  if args.scale is not None and args.model != 'msrresnet':
    raise UserError(f'--scale is an option of msrresnet, not of {args.model}')
  out = run_folder.check_new_folder(args.out)
  config = _load_config(args.config) if args.config else None
  state, key = torch_files.read(args.file)
  found = recognise.recognise(convert.torch_names(state))
  if found is not None and found[0] != args.model:
    raise UserError(f'{args.file} holds {recognise.describe(found)} weights, not {args.model}; '
                    f'give --model={found[0]}')
  options = found[1] if found else {}
  if args.model == 'msrresnet' and found:
    if args.scale is not None and args.scale != options['scale']:
      raise UserError(f'{args.file} holds MSRResNet x{options["scale"]} weights, not x{args.scale}; '
                      f'give --scale={options["scale"]}')
    if (options['num_in_ch'], options['num_out_ch']) != (3, 3):
      raise UserError(f'{args.file} holds an MSRResNet of {options["num_in_ch"]} input channels; '
                      'this project trains RGB networks (3)')
  if config is None:
    config = _default_config(args.model, options if args.model == 'msrresnet' and found else
                             {'scale': args.scale or 4, 'num_feat': 64, 'num_block': 16})
  elif config.model.name != args.model:
    raise UserError(f'--config={args.config} trains {config.model.name}, not --model={args.model}')
  if args.dataset:
    config.dataset = args.dataset
  config.model.attention = args.attention
  create = _create_options(config, options)
  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter('always')
    try:
      variables = convert.torch_to_flax(state, args.model, seed=config.seed, **create)
    except convert.ConversionError as e:
      raise UserError(f'{args.file}: {e}') from None
  for warning in caught:
    print(f'note: {warning.message}', file=sys.stderr, flush=True)
  source = {'file': os.path.abspath(args.file), 'key': key, 'sha256': run_folder.sha256(args.file)}
  run_folder.write(out, config, variables, source)
  print(f'{out}: {args.model} + {args.attention}, {models.count_params(variables["params"]):,} parameters from '
        f'{args.file}{f" ({key})" if key else ""}; use it with python -m pfca_jax.predict ... --workdir={out} '
        f'or --config.init_from={out}', flush=True)


def _weight_options(config) -> dict:
  """models.create's options for `config` that shape its weights (not how it computes: dtype, layers), with
  MSRResNet's scale."""
  from pfca_jax.models.from_config import model_options
  options = {k: v for k, v in model_options(config).items() if k not in ('dtype', 'conv_impl', 'attention_impl')}
  return dict(options, scale=config.scale) if config.model.name == 'msrresnet' else options


def _create_options(config, found_options: dict) -> dict:
  """models.create's options for `config`, checked against what the file fixes (classes, scale, size)."""
  options = _weight_options(config)
  if config.model.name == 'msrresnet':
    for field in ('scale', 'num_feat', 'num_block'):
      if field in found_options and found_options[field] != options[field]:
        raise UserError(f'the file holds an MSRResNet with {field}={found_options[field]}; the config has '
                        f'{field}={options[field]}')
    return options
  from pfca_jax.data.classification import get_spec
  classes = get_spec(config.dataset).num_classes
  if 'num_classes' in found_options and found_options['num_classes'] != classes:
    raise UserError(f'the file\'s classifier has {found_options["num_classes"]} classes and {config.dataset} has '
                    f'{classes}: give --dataset (or --config) of a dataset with {found_options["num_classes"]} classes')
  return dict(options, num_classes=classes)


def to_torch(args) -> None:
  from pfca_jax import convert
  from pfca_jax.convert import torch_files
  out = os.path.abspath(args.out)
  if os.path.exists(out):
    raise UserError(f'--out={args.out!r} exists; give a new file name (nothing is overwritten)')
  if not os.path.isdir(os.path.dirname(out)):
    raise UserError(f'--out={args.out!r}: the folder {os.path.dirname(out)} does not exist')
  torch_files.import_torch()
  config = run_folder.open_run(args.workdir)
  weights = run_folder.read_weights(args.workdir)
  step, trained, average = weights.step, weights.trained, weights.average
  options = _weight_options(config)
  if config.model.name != 'msrresnet':
    options['num_classes'] = run_folder.num_classes(trained)
  export = lambda weights: convert.flax_to_torch(weights, config.model.name, **options)
  if config.model.name == 'msrresnet':  # BasicSR's layout: both networks, the average under params_ema.
    content = {'params': export(trained), **({'params_ema': export(average)} if average else {})}
  else:
    content = export(average or trained)
  torch_files.write(out, content)
  which = 'moving-average' if average else 'trained'
  print(f'{args.out}: {config.model.name} + {config.model.attention}, {which} weights of step {step}'
        + (' (BasicSR layout: params' + (', params_ema' if average else '') + ')' if config.model.name == 'msrresnet'
           else ' (a bare state dict)'), flush=True)


# The spellings of the flag-per-direction command line, refused naming their subcommand.
_RENAMED = {'--from-torch': 'write `python -m pfca_jax.convert from_torch --file=FILE.pth --model=NAME --out=DIR`',
            '--to-torch': 'write `python -m pfca_jax.convert to_torch --workdir=RUN --out=FILE.pth`'}


def parser() -> runner.Parser:
  p = runner.Parser('python -m pfca_jax.convert', '\n\n'.join(__doc__.split('\n\n')[:2]), renamed=_RENAMED)
  commands = p.add_subcommands()
  f = commands.add_parser('from_torch', help='A PyTorch checkpoint into a folder that predict and init_from read.')
  f.add_argument('--file', required=True, metavar='FILE.pth', help='PyTorch checkpoint to convert.')
  f.add_argument('--model', required=True, help='The network the file holds, a name of pfca_jax.models.MODELS.')
  f.add_argument('--out', required=True, help='The folder to write; new or empty (nothing is overwritten).')
  f.add_argument('--scale', type=int, help='msrresnet: the upscaling factor (read from the file when not given).')
  f.add_argument('--attention', default='none', help='The attention to insert (default none).')
  f.add_argument('--config', help='FILE.py[:ARG], the config the weights will be used with.')
  f.add_argument('--dataset', help="The dataset whose preprocessing predict applies (default: the model's recipe).")
  t = commands.add_parser('to_torch', help="A training run's weights as a PyTorch .pth file.")
  t.add_argument('--workdir', required=True, help='Training run whose weights to write.')
  t.add_argument('--out', required=True, metavar='FILE.pth', help='The .pth file to write; never overwritten.')
  return p


def main(argv: list[str] | None = None) -> int:
  """The command's exit status: 0, or 2 after one `error: ...` line (also when called from Python)."""
  return runner.run(_convert, argv)


def _convert(argv: list[str] | None) -> None:
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
  args = parser().parse_args(argv)
  from absl import logging
  from pfca_jax.cli import command
  logging.set_verbosity(logging.FATAL)
  command.quiet_closed_event_loops()
  (from_torch if args.command == 'from_torch' else to_torch)(args)


if __name__ == '__main__':
  sys.exit(main())
