#!/usr/bin/env bash
# The trainer on a GPU machine, as one command of at most 8 minutes (experiments/gpu_check.py says what it
# checks): ResNet-50 + PFCA and MSRResNet x4 + PFCA in bfloat16 on synthetic data, each trained for 300
# steps with an evaluation and a checkpoint, killed and resumed (final state bit-identical to the run
# never stopped), and timed against `python -m pfca_jax.bench`. Needs no TensorFlow: the machine's JAX
# with CUDA, flax, optax, orbax and chex, plus ml_collections (and tqdm, Pillow where missing), which
# WHEELS may hold as wheel files to install without an index, e.g. made elsewhere with
#   pip download --no-deps -d wheels ml_collections==1.1.0 tqdm==4.70.1
#
#   [WHEELS=wheels] OUT=/tmp/gpu_check bash experiments/gpu_check.sh [seconds in all, default 470]
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gpu_check}
mkdir -p "$OUT"
if [[ -n "${WHEELS:-}" ]]; then
  python3 -m pip install -q --no-index --no-deps --find-links "$WHEELS" "$WHEELS"/*.whl 2>&1 | tail -2
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"  # The checkout itself, not an installed copy.
{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>/dev/null || echo "no nvidia-smi"
  python3 -c 'import jax, flax, optax; print("jax", jax.__version__, "flax", flax.__version__, "optax",
optax.__version__, jax.devices())'
  python3 -c 'import importlib.util as u; print("tensorflow installed:", u.find_spec("tensorflow") is not None)'
  nproc; date -u +%Y-%m-%dT%H:%MZ
} 2>&1 | tee "$OUT/machine.txt"
python3 experiments/gpu_check.py --out="$OUT" --seconds="${1:-470}" 2>&1 | tee "$OUT/gpu_check.txt"
exit "${PIPESTATUS[0]}"
