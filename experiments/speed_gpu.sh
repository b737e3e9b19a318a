#!/usr/bin/env bash
# The GPU rows of experiments/results/speed.md, as one command on a one-GPU machine whose Python has
# JAX with CUDA, flax, optax, chex and (for the references) torch, torchvision and timm; the benchmark
# needs no TensorFlow. Writes logs and JSON under $OUT (default /tmp/speed_gpu). Each part has a time
# limit so that a lease of a few minutes still brings back what finished; the rounds are logged as
# they end, so a part cut short leaves its finished rounds in its log. A part that would start with
# under 30 s left is skipped. speed.md says which parts its H100 run finished.
#
#   [PARTS='msr tests'] OUT=/tmp/speed_gpu bash experiments/speed_gpu.sh [seconds in all, default 540]
set -uo pipefail
OUT=${OUT:-/tmp/speed_gpu}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
deadline=$(( $(date +%s) + ${1:-540} ))
left() { echo $(( deadline - $(date +%s) )); }
limited() {  # limited NAME SECONDS COMMAND...: limited to SECONDS and to what is left, logged in $OUT/NAME.log.
  local name=$1 limit=$2; shift 2
  local t=$(( limit < $(left) ? limit : $(left) ))
  if (( t < 30 )); then echo "skipped $name: ${t}s left"; return; fi
  echo "== $name (limit ${t}s): $*"
  timeout "$t" "$@" 2>&1 | tee "$OUT/$name.log"
  echo "== $name rc=$?"
}
part() {  # part NAME SECONDS ARGS...: one bench process with ARGS, its JSON in $OUT/NAME.json.
  local name=$1 limit=$2; shift 2
  limited "$name" "$limit" python3 -m pfca_jax.bench "$@" --json="$OUT/$name.json"
}
{ nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
  python3 -c 'import jax, flax, optax, torch; print("jax", jax.__version__, "flax", flax.__version__,
"optax", optax.__version__, "torch", torch.__version__, jax.devices())'
} 2>&1 | tee "$OUT/machine.txt"
# PARTS picks the parts and their order (default: all, as below); a session with a few minutes of
# device time runs what it still lacks first.
for p in ${PARTS:-resnet50 small cifar164 tests}; do
  case $p in
    resnet50) part resnet50 280 --benchmarks=resnet50 --attentions=none,pfca,se,eca,simam --dtype=bfloat16 \
        --batch_size=256 --rounds=8 --steps=5 --round_seconds=1.5 ;;
    small) part small 225 --benchmarks=msrresnet_x4,cifar_resnet56 --attentions=none,pfca,se --dtype=bfloat16 \
        --batch_size=128 --rounds=6 --steps=5 --round_seconds=1 ;;
    msr) part msr 150 --benchmarks=msrresnet_x4 --attentions=none,pfca,se --dtype=bfloat16 --batch_size=128 \
        --rounds=10 --steps=5 --round_seconds=1 ;;
    # CIFAR ResNet-164 compiles slowly on the GPU (44 s without attention on an H100).
    cifar164) part cifar164 220 --benchmarks=cifar_resnet164 --attentions=none,pfca,se --dtype=bfloat16 \
        --batch_size=128 --rounds=6 --steps=5 --round_seconds=1 ;;
    # PFCA's, the attentions' and the convolution choices' numerics tests on the GPU. Four workers share
    # the card, so none may take most of its memory up front.
    tests) XLA_PYTHON_CLIENT_PREALLOCATE=false limited tests 200 python3 -m pytest -q -p no:cacheprovider -n 4 \
        tests/test_attention.py tests/test_fast_attention.py tests/test_fast_batchnorm.py tests/test_fast_conv.py tests/test_fast_layer.py ;;
    *) echo "unknown part '$p': accepted resnet50, small, msr, cifar164, tests"; exit 2 ;;
  esac
done
echo "left: $(left)s"
