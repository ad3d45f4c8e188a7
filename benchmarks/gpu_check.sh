#!/usr/bin/env bash
# Every GPU figure of issue 31 in one command, run from the repository root.
#
#   bash benchmarks/gpu_check.sh            # on the GPU machine (device tool: carry .whl and .gpu_check)
#   bash benchmarks/gpu_check.sh --cpu      # the fast mode, here or in CI (no wheelhouse needed)
#   bash benchmarks/gpu_check.sh --prepare  # HERE, once: the wheelhouse (.whl) and the clips (.gpu_check)
#
# Writes $OUT/gpu.json (each step's status and numbers, the targets) and $OUT/summary.txt
# ($OUT: the device tool's folder; else ./gpu_check_out). Each step runs under its own timeout
# (one failure loses nothing else); the GPU mode's timeouts add up to <= 8 minutes.
# Steps: benchmarks/gpu_check.py (env, tvl1, backbone) and gpu_check_runs.py (extract, train, predict).
set -uo pipefail
MODE=gpu
for a in "$@"; do
  case "$a" in
    --cpu) MODE=cpu ;;
    --prepare) MODE=prepare ;;
    *) echo "usage: $0 [--cpu|--prepare]" >&2; exit 2 ;;
  esac
done
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/gpu_check_out}
DATA=${GPU_CHECK_DATA:-$PWD/.gpu_check}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/gpu_check.XXXXXX")
export PYTHONUNBUFFERED=1
mkdir -p "$OUT"
# the Python to use: $PYTHON, else the checkout's .venv, else python3 (the GPU machine's)
if [[ -n ${PYTHON:-} ]]; then PY=$PYTHON; elif [[ -x .venv/bin/python ]]; then PY=$PWD/.venv/bin/python; else PY=python3; fi

if [[ $MODE == prepare ]]; then
  PYTHON=$PY bash benchmarks/wheelhouse.sh .whl && "$PY" -m benchmarks.gpu_prepare --dir "$DATA"
  exit $?
fi

if [[ $MODE == gpu ]]; then
  DEVICE=cuda
  # the machine reaches no index: framesel from this tree, the rest from the carried wheels
  SITE=/tmp/gpu_check_site
  if ls .whl/*.whl >/dev/null 2>&1; then
    timeout 60 "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target "$SITE" .whl/*.whl || echo "wheel install failed (exit $?)"
  else
    echo "no .whl/ wheelhouse: run 'bash benchmarks/gpu_check.sh --prepare' here first" >&2
  fi
  timeout 90 "$PY" -m pip install -q --no-index --no-deps --no-build-isolation --no-cache-dir \
    --target "$SITE" . || echo "framesel install failed (exit $?): running from the tree"
  export PYTHONPATH=$SITE${PYTHONPATH:+:$PYTHONPATH}
  export GPU_CHECK_FRAMESEL=$SITE/bin/framesel
  T_ENV=20; T_TVL1=140; T_BACKBONE=40; T_EXTRACT=110; T_TRAIN=130; T_PREDICT=20
else
  DEVICE=cpu
  CPU=--cpu
  if [[ ! -f $DATA/tvl1_ref.npz ]]; then       # CI: a clean clone with ../shared beside it
    DATA=$WORK/data
    "$PY" -m benchmarks.gpu_prepare --dir "$DATA" --clips 2 --pairs 2 --no-flow || exit 1
  fi
  T_ENV=60; T_TVL1=120; T_BACKBONE=120; T_EXTRACT=240; T_TRAIN=240; T_PREDICT=120
fi

run_step() {  # name, timeout seconds
  local name=$1 limit=$2 start=$SECONDS
  echo "== $name (timeout ${limit} s)"
  timeout --kill-after=10 "$limit" "$PY" -m benchmarks.gpu_check "$name" --work "$WORK" --data "$DATA" \
    --device "$DEVICE" ${CPU:-} 2>&1 | tee -a "$OUT/log.txt" | tail -n 40
  echo "${PIPESTATUS[0]}" > "$WORK/$name.rc"
  echo "== $name: exit $(cat "$WORK/$name.rc") after $((SECONDS - start)) s"
}
: > "$OUT/log.txt"
run_step env $T_ENV
run_step tvl1 $T_TVL1
run_step backbone $T_BACKBONE
run_step extract $T_EXTRACT
run_step train $T_TRAIN
run_step predict $T_PREDICT
"$PY" -m benchmarks.gpu_check collect --work "$WORK" --out "$OUT" ${CPU:-} ${CPU:+--check}
rc=$?
rm -rf "$WORK"
exit $rc
