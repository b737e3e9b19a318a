"""What exact super-resolution evaluation costs: a compile of the body per image shape, and its time.

    python experiments/sr_eval_compile.py [--models=basicsr_x4,quickstart_x2] [--attention=pfca]
        [--tile=160] [--overlap=40] [--out=experiments/results/sr_eval_compile]

Evaluation and `predict upscale` run MSRResNet's residual body on the whole LR image and its
upsampling tail in tiles (pfca_jax.tasks.tiling.Upscaler), so the body is compiled once per distinct LR
image shape and the tail once. For each model and each of its LR sizes this prints and writes:
- `compile s`: compiling `features` at that shape (what an evaluation pays once per new shape),
- `upscaler s`: one image through the Upscaler, compiled (body whole, tail in tiles),
- `tiled s`: the same image through the whole network in tiles of the same size (`tiling.upscale`,
  the way evaluation worked before; channel attention then sees each tile's statistics),
- `max |diff|` of each from the whole-image forward pass, in [0, 1] image units (one 8-bit level
  is 0.0039), and how many 8-bit output values differ from it.
Weights are random: BasicSR's init with the kernels scaled up (`kernel_scale`) so that the residual
branch moves the output by a few 8-bit levels, as a trained one does (BasicSR's own init leaves it at
about 1e-5); images are random. Models: `basicsr_x4` is BasicSR's MSRResNet x4 (64 features, 16 blocks) at LR sizes of x4
DIV2K-shaped images (2040 pixels on the long side, so 510 at LR); `quickstart_x2` is the quick
start's (32 features, 4 blocks, x2) at the LR sizes of its three held-out photos.
Writes OUT.md (command, machine, table) and OUT.json.
"""

import datetime
import json
import shlex
import sys
import time

if __name__ == '__main__':
  from pfca_jax.cli import cpu_settings
  cpu_settings.apply()  # Before JAX: see pfca_jax/cli/cpu_settings.py.

import jax  # noqa: E402
import numpy as np  # noqa: E402

from pfca_jax import models  # noqa: E402
from pfca_jax.bench import timing
from pfca_jax.tasks import tiling
from pfca_jax.errors import UserError  # noqa: E402
from pfca_jax.models.attention import ATTENTIONS  # noqa: E402
from pfca_jax.cli import runner  # noqa: E402

# name -> (scale, num_feat, num_block, kernel_scale, LR sizes as (height, width)). kernel_scale 5 gives the
# x4 network's branch a standard deviation of 0.037 (9 8-bit levels) on uniform noise; 10 makes it diverge.
MODELS = {
    'basicsr_x4': (4, 64, 16, 5.0, [(339, 510), (384, 510), (288, 510), (510, 339)]),
    'quickstart_x2': (2, 32, 4, 10.0, [(213, 320), (240, 320), (256, 256)]),
}


def measure(name: str, attention: str, tile: int, overlap: int, log) -> list[dict]:
  scale, num_feat, num_block, kernel_scale, sizes = MODELS[name]
  model = models.create('msrresnet', scale=scale, num_feat=num_feat, num_block=num_block, attention=attention)
  variables = model.init(jax.random.key(0), np.zeros((1, 16, 16, 3), np.float32))
  variables = jax.tree.map(lambda v: v * kernel_scale if v.ndim == 4 else v, variables)
  upscaler = tiling.Upscaler(model, tile=tile, overlap=overlap).use(variables)
  whole_net = jax.jit(model.apply)
  features = jax.jit(lambda v, x: model.apply(v, x, method='features'))
  rows = []
  for i, (h, w) in enumerate(sizes):
    lr = np.random.default_rng(i).uniform(size=(h, w, 3)).astype(np.float32)
    t0 = time.perf_counter()
    features.lower(variables, lr[None]).compile()
    compile_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    exact = upscaler(lr)
    upscaler_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    seams = tiling.upscale(lambda x: np.asarray(whole_net(variables, x)), lr, scale, tile=tile, overlap=overlap)
    tiled_s = time.perf_counter() - t0
    whole = np.asarray(whole_net(variables, lr[None]))[0]
    reference = tiling.to_uint8(whole)
    row = {'model': name, 'attention': attention, 'lr': f'{w}x{h}', 'compile_s': compile_s,
           'upscaler_s': upscaler_s, 'tiled_s': tiled_s,
           'upscaler_max_diff': float(np.abs(exact - whole).max()), 'tiled_max_diff': float(np.abs(seams - whole).max()),
           'upscaler_8bit_differ': int(np.sum(tiling.to_uint8(exact) != reference)),
           'tiled_8bit_differ': int(np.sum(tiling.to_uint8(seams) != reference)), '8bit_values': int(reference.size)}
    log(f'{name} {row["lr"]}: compile {compile_s:.2f} s, upscaler {upscaler_s:.2f} s, tiled {tiled_s:.2f} s, '
        f'max diff {row["upscaler_max_diff"]:.2g} / {row["tiled_max_diff"]:.2g}')
    rows.append(row)
  return rows


def markdown(rows: list[dict], command: str) -> str:
  header = ('| model | LR (WxH) | compile s | upscaler s | tiled s | upscaler max diff | tiled max diff | '
            '8-bit values differing: upscaler / tiled |')
  lines = [header, '|' + '---|' * 8]
  for r in rows:
    lines.append(f'| {r["model"]} + {r["attention"]} | {r["lr"]} | {r["compile_s"]:.2f} | {r["upscaler_s"]:.2f} | '
                 f'{r["tiled_s"]:.2f} | {r["upscaler_max_diff"]:.2g} | {r["tiled_max_diff"]:.2g} | '
                 f'{r["upscaler_8bit_differ"]:,} / {r["tiled_8bit_differ"]:,} of {r["8bit_values"]:,} |')
  return '\n'.join([
      '# Exact super-resolution evaluation: compile cost per image shape', '',
      f'Command: `{command}`', f'Machine: {timing.machine()}; written {datetime.date.today().isoformat()}.', '',
      'Seconds: `compile` = compiling the body (`MSRResNet.features`) at that LR shape, paid once per distinct '
      'shape; `upscaler` = one image, body whole and tail in tiles (what evaluation and predict run, its first call '
      'at the shape, so compile included); `tiled` = the whole network in tiles of the same size (the earlier '
      'evaluation), its program compiled on the first row. Differences are from the whole-image forward pass.', '',
      *lines, ''])


def main(argv=None) -> int:
  parser = runner.Parser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--models', default=','.join(MODELS))
  parser.add_argument('--attention', default='pfca')
  parser.add_argument('--tile', type=int, default=160)
  parser.add_argument('--overlap', type=int, default=40)
  parser.add_argument('--out', default='experiments/results/sr_eval_compile')
  args = parser.parse_args(argv)
  try:
    names = [n for n in args.models.split(',') if n]
    unknown = [n for n in names if n not in MODELS]
    if unknown or not names:
      raise UserError(f'--models={args.models}: valid names are {", ".join(MODELS)}')
    if args.attention not in ATTENTIONS:
      raise UserError(f'--attention={args.attention}: valid: {", ".join(ATTENTIONS)}')
    tiling.check_tiles(args.tile, args.overlap)
    timing.check_writable('--out', args.out + '.md')
  except (UserError, ValueError) as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  log = lambda text: print(text, flush=True)
  rows = [row for name in names for row in measure(name, args.attention, args.tile, args.overlap, log)]
  command = shlex.join(['python', 'experiments/sr_eval_compile.py'] + sys.argv[1:])
  with open(args.out + '.md', 'w') as f:
    f.write(markdown(rows, command))
  with open(args.out + '.json', 'w') as f:
    json.dump({'command': command, 'machine': timing.machine(), 'rows': rows}, f, indent=2)
  print(markdown(rows, command))
  return 0


if __name__ == '__main__':
  sys.exit(runner.run(main))
