#!/usr/bin/env bash
# The performance issue's GPU benchmarks in one go, in under 8 minutes on a CUDA machine:
#   1. benchmarks/bench_gpu.py    decode / encode / pipeline with DECODERS decode processes feeding one
#                                 encoder (resnet18, bf16 autocast, channels_last, pinned non-blocking copies)
#   2. benchmarks/bench_train.py  the trainer benchmark on the same device
#
#   benchmarks/gpu.sh                          # CUDA machine: rewrites benchmarks/RESULTS-gpu.md (commit it)
#   DEVICE=cpu QUICK=1 benchmarks/gpu.sh       # CI-sized form, runs on a CPU (tests/test_bench_gpu.py)
#
# Knobs (environment):
#   DEVICE=cuda|cuda:N|cpu  where the encoder and the trainer run (default cuda; exits 1 when there is no GPU)
#   DECODERS=N              decode processes feeding the encoder (default 4)
#   QUICK=1                 CI-sized: three short clips, a 256-clip trainer cache, concat only
#   OUT_DIR=DIR             where the result files, raw JSON and logs are copied (default $WORK_DIR/gpu-results)
#   WORK_DIR=DIR            videos, caches and raw JSON of the scripts (default bench-out, git-ignored)
#   RESULTS=FILE            markdown file both scripts write their section into (default benchmarks/RESULTS-gpu.md
#                           for a full CUDA run, else $WORK_DIR/RESULTS-gpu-<device>[-quick].md)
#   TRAIN_CLIPS=N           clips in the trainer benchmark's cache (default 4000, which keeps both benchmarks
#                           within 8 minutes; its targets are defined for its own default of 10000; quick 256)
#   SETUP=auto|1|0          install like `make setup` (ffmpeg, torch, this package): auto = only when something
#                           is missing (default), 1 = always, 0 = never
#   WHEELS=DIR              a machine without network: install the wheels in DIR (pip --no-index) instead
#   FFMPEG_DIR=DIR          a folder holding ffmpeg and ffprobe (e.g. a static build), put first on PATH
#   BUDGET_S=S              wall-clock budget of the two benchmarks (default 480 = 8 minutes, setup not counted);
#                           a step still running when it is spent is stopped, and the script exits 1 saying which
#   PY=python3              the interpreter
set -euo pipefail

cd "$(dirname "$0")/.."
DEVICE=${DEVICE:-cuda}
DECODERS=${DECODERS:-4}
QUICK=${QUICK:-0}
WORK_DIR=${WORK_DIR:-bench-out}
OUT_DIR=${OUT_DIR:-$WORK_DIR/gpu-results}
SETUP=${SETUP:-auto}
BUDGET_S=${BUDGET_S:-480}
PY=${PY:-python3}
KIND=${DEVICE%%:*}
if [[ $QUICK == 1 ]]; then
  SUFFIX=-quick
else
  SUFFIX=
fi
if [[ $KIND == cuda && $QUICK != 1 ]]; then
  RESULTS=${RESULTS:-benchmarks/RESULTS-gpu.md}
else
  RESULTS=${RESULTS:-$WORK_DIR/RESULTS-gpu-$KIND$SUFFIX.md}
fi

say() { printf '[gpu.sh %4ds] %s\n' "$SECONDS" "$*"; }
die() {
  printf 'gpu.sh: %s\n' "$*" >&2
  exit 1
}

# -- the device: fail fast and clearly when a GPU was asked for and there is none -----------------------------
if [[ $KIND == cuda ]]; then
  command -v nvidia-smi >/dev/null 2>&1 ||
    die "DEVICE=$DEVICE but nvidia-smi is not on PATH (no NVIDIA driver here). On a machine without a GPU run: DEVICE=cpu QUICK=1 benchmarks/gpu.sh"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader ||
    die "DEVICE=$DEVICE but nvidia-smi finds no usable GPU"
elif [[ $KIND != cpu ]]; then
  die "DEVICE=$DEVICE: expected cuda, cuda:N or cpu"
fi

# -- what it needs, installed like `make setup` ------------------------------------------------------------
missing() {
  command -v ffmpeg >/dev/null 2>&1 && command -v ffprobe >/dev/null 2>&1 &&
    "$PY" -c "import torch, torchvision, ffmpeg, mmcache, mmfit, skvideo" >/dev/null 2>&1 && return 1
  return 0
}
install() {
  if [[ -n ${WHEELS:-} ]]; then
    say "installing the wheels in $WHEELS (no network)"
    "$PY" -m pip install -q --no-index --find-links "$WHEELS" "$WHEELS"/*.whl
  else
    say "installing (make setup)"
    make -s setup PY="$PY"
  fi
}
if [[ -n ${FFMPEG_DIR:-} ]]; then export PATH="$FFMPEG_DIR:$PATH"; fi
case $SETUP in
  1) install ;;
  auto) if missing; then install; fi ;;
  0) ;;
  *) die "SETUP=$SETUP: expected auto, 1 or 0" ;;
esac
if missing; then
  die "still missing: ffmpeg/ffprobe on PATH, or one of torch, torchvision, ffmpeg-python, scikit-video, mmcache, mmfit"
fi
if [[ $KIND == cuda ]]; then
  "$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)" ||
    die "DEVICE=$DEVICE but torch.cuda.is_available() is False (torch $("$PY" -c 'import torch; print(torch.__version__)'))"
fi

TRAIN_HELP=$("$PY" benchmarks/bench_train.py --help)
TRAIN_DEVICE=(--device "$DEVICE")
if ! grep -q -- '--device' <<<"$TRAIN_HELP"; then
  [[ $KIND == cpu ]] || die "benchmarks/bench_train.py has no --device option, so it cannot run on $DEVICE"
  TRAIN_DEVICE=() # an older bench_train.py: it runs on the CPU
fi

mkdir -p "$OUT_DIR" "$WORK_DIR"
STAMP=$(mktemp "$WORK_DIR/.gpu-sh-start.XXXXXX")
trap 'rm -f "$STAMP"' EXIT

# Runs "$@" within what is left of the budget, its output also in $OUT_DIR/<name>.log.
BENCH_START=$SECONDS
step() {
  local name=$1 left=$((BUDGET_S - SECONDS + BENCH_START)) rc=0
  shift
  ((left > 5)) || die "no time left for $name (BUDGET_S=$BUDGET_S)"
  say "$name: $* (at most ${left} s)"
  timeout --foreground -k 10 "$left" "$@" 2>&1 | tee "$OUT_DIR/$name.log" || rc=$?
  if ((rc == 124 || rc == 137)); then
    die "$name did not finish within the ${BUDGET_S} s budget; see $OUT_DIR/$name.log"
  elif ((rc != 0)); then
    die "$name failed (exit $rc); see $OUT_DIR/$name.log"
  fi
  say "$name: done"
}

GPU_ARGS=(--device "$DEVICE" --dtype bfloat16 --channels-last --decoders "$DECODERS" --check-one-decoder --out "$WORK_DIR" --results "$RESULTS")
TRAIN_ARGS=("${TRAIN_DEVICE[@]}" --out "$WORK_DIR" --results "$RESULTS")
if [[ $QUICK == 1 ]]; then
  GPU_ARGS+=(--quick)
  TRAIN_ARGS+=(--quick --clips "${TRAIN_CLIPS:-256}" --fusions concat --enc-frames 16)
else
  TRAIN_ARGS+=(--clips "${TRAIN_CLIPS:-4000}")
fi

step bench_gpu "$PY" benchmarks/bench_gpu.py "${GPU_ARGS[@]}"
step bench_train "$PY" benchmarks/bench_train.py "${TRAIN_ARGS[@]}"

# -- results: the markdown file both scripts wrote, this run's raw JSON, the logs ---------------------------
if [[ $(realpath "$RESULTS") != "$(realpath "$OUT_DIR")/$(basename "$RESULTS")" ]]; then cp "$RESULTS" "$OUT_DIR/"; fi
for bench in bench_gpu bench_train; do
  if [[ -d $WORK_DIR/$bench ]]; then
    find "$WORK_DIR/$bench" -maxdepth 1 -name 'results*.json' -newer "$STAMP" -print0 |
      while IFS= read -r -d '' f; do cp "$f" "$OUT_DIR/$bench-$(basename "$f")"; done
  fi
done
{
  echo "device=$DEVICE decoders=$DECODERS quick=$QUICK results=$RESULTS seconds=$SECONDS benchmarks_s=$((SECONDS - BENCH_START))"
  if [[ $KIND == cuda ]]; then nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader; fi
} >"$OUT_DIR/summary.txt"
say "all done in ${SECONDS} s (benchmarks $((SECONDS - BENCH_START)) s); results in $OUT_DIR/ ($(basename "$RESULTS") is written by both scripts)"
