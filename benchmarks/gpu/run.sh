#!/usr/bin/env bash
# The GPU check of issue 18 in one command (docs/gpu.md): on a fresh GPU
# machine, build mtlkit._C against the torch found there, then run every stage
# of benchmarks/gpu/bench.py and print one table.
#
#   bash benchmarks/gpu/run.sh [--quick | --dry-run] [--ablation] [--stages a,b] [--budget S]
#                              [--total S] [--no-build]
#
#   (default)   the issue's sizes on one H200: about 5 minutes, the build included
#   --quick     a cheaper second try (fewer steps and repetitions): about 3-4 minutes
#   --dry-run   the same code on the CPU with tiny sizes, no build (CI; also MTLKIT_GPU_DRY=1)
#   --ablation  add the short ResNet-50 ablation (about 5 more minutes: better alone,
#               --stages ablation, in a call of its own)
#   --stages    only these stages: env,pytest,ops_exact,ops_speed,train,infer,gradients,ablation
#   --budget S  seconds for the stages together (default: the mode's, 420 / 240)
#   --total S   the whole command ends within S seconds, the build included: the stages
#               get what the build left (default 540 full, 330 quick; 0: no cap)
#   --no-build  use the mtlkit already installed
#
# Environment: OUT (results.json, table.md, run.log, build.log; default
# runs/gpu), PYTHON (default python3), CUDA_HOME (default /usr/local/cuda),
# TORCH_CUDA_ARCH_LIST (default 9.0), MAX_JOBS (default: the cores),
# MTLKIT_GPU_BUILD_LIMIT (seconds, default 300), MTLKIT_GPU_WORK (scratch,
# default /tmp/mtlkit-gpu). Wheels in .whl/ (benchmarks/gpu/fetch_wheels.sh:
# trimesh and embreex, which render the rooms) are installed first.
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 2
ROOT=$(pwd)
PY=${PYTHON:-python3}
T0=$(date +%s)
MODE=full
BUILD=1
TOTAL=
ARGS=()
[ "${MTLKIT_GPU_DRY:-0}" != 0 ] && MODE=dry
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) MODE=quick ;;
    --dry-run) MODE=dry ;;
    --no-build) BUILD=0 ;;
    --ablation) ARGS+=(--ablation) ;;
    --stages|--budget)
      [ $# -ge 2 ] || { echo "run.sh: $1 needs a value" >&2; exit 2; }
      ARGS+=("$1" "$2"); shift ;;
    --stages=*|--budget=*) ARGS+=("$1") ;;
    --total)
      [ $# -ge 2 ] || { echo "run.sh: --total needs a value" >&2; exit 2; }
      TOTAL=$2; shift ;;
    --total=*) TOTAL=${1#--total=} ;;
    -h|--help) sed -n '2,25p' "$0"; exit 0 ;;
    *) echo "run.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
  shift
done
OUT=${OUT:-$ROOT/runs/gpu}
WORK=${MTLKIT_GPU_WORK:-/tmp/mtlkit-gpu}
mkdir -p "$OUT" "$WORK" || exit 2
rm -f "$WORK/build.json"
export OUT MTLKIT_GPU_WORK="$WORK" PYTHONUNBUFFERED=1
# Everything printed also goes to OUT/run.log (it comes back even when the
# command is killed at its time limit).
exec > >(tee -a "$OUT/run.log") 2>&1
echo "mtlkit gpu check: mode $MODE, $(date -u +%Y-%m-%dT%H:%M:%SZ), $(uname -n), python $($PY -c 'import sys; print(sys.version.split()[0])' 2>&1)"

# Carried wheels (no registry is reachable on the device machine).
if compgen -G ".whl/*.whl" > /dev/null; then
  SITE=$WORK/site
  if $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" .whl/*.whl; then
    export PYTHONPATH=$SITE${PYTHONPATH:+:$PYTHONPATH}
    echo "installed carried wheels: $(ls .whl | tr '\n' ' ')"
  else
    echo "WARNING: the carried wheels in .whl/ did not install; rooms become random stand-ins"
  fi
fi

if [ "$MODE" != dry ] && [ "$BUILD" = 1 ]; then
  export CUDA_HOME=${CUDA_HOME:-/usr/local/cuda}
  export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0}
  export MAX_JOBS=${MAX_JOBS:-$(nproc)}
  # --no-deps: the device image's torch is what we build against (setup.py's
  # torch bound is about the tested CPU releases; nothing can be downloaded there).
  BUILD_CMD="$PY -m pip install --no-deps --no-build-isolation --no-cache-dir -e ."
  echo "building mtlkit._C: CUDA_HOME=$CUDA_HOME TORCH_CUDA_ARCH_LIST=$TORCH_CUDA_ARCH_LIST MAX_JOBS=$MAX_JOBS $BUILD_CMD"
  START=$(date +%s)
  timeout "${MTLKIT_GPU_BUILD_LIMIT:-300}" $BUILD_CMD > "$OUT/build.log" 2>&1
  RC=$?
  SECONDS_TAKEN=$(( $(date +%s) - START ))
  tail -n 3 "$OUT/build.log"
  OK=false; [ $RC -eq 0 ] && OK=true
  printf '{"ok": %s, "seconds": %d, "returncode": %d, "command": "%s", "arch": "%s", "jobs": "%s"}\n' \
    "$OK" "$SECONDS_TAKEN" "$RC" "$BUILD_CMD" "$TORCH_CUDA_ARCH_LIST" "$MAX_JOBS" > "$WORK/build.json"
  echo "build: exit $RC after $SECONDS_TAKEN s (log: $OUT/build.log)"
  if [ $RC -ne 0 ]; then
    # Still install the package (no extension), so the stages run on the
    # reference ops and the table says what failed; build.log has why.
    echo "WARNING: the build failed; installing without the extension (reference ops)"
    MTLKIT_NO_EXT=1 $PY -m pip install -q --no-deps --no-build-isolation --no-cache-dir -e . >> "$OUT/build.log" 2>&1
  fi
fi

$PY -c "import mtlkit" || { echo "run.sh: mtlkit does not import with $PY (install it, or drop --no-build)"; exit 2; }
case "$MODE" in full) TOTAL=${TOTAL:-540} ;; quick) TOTAL=${TOTAL:-330} ;; *) TOTAL=${TOTAL:-0} ;; esac
[[ "$TOTAL" =~ ^[0-9]+$ ]] || { echo "run.sh: --total must be a whole number of seconds, got '$TOTAL'" >&2; exit 2; }
if [ "$TOTAL" -gt 0 ]; then
  # what the build left of the whole command's time, less 15 s to print and save
  ARGS+=(--cap "$(( TOTAL - ($(date +%s) - T0) - 15 ))")
fi
$PY benchmarks/gpu/bench.py --mode "$MODE" --out "$OUT" --work "$WORK" "${ARGS[@]}"
