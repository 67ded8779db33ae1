#!/usr/bin/env bash
# Trains a model on a lent GPU machine for a fixed time, in one device run, and writes the released weights, the
# validation log and the run's log under $OUT/train: dcmpnet_small (training/configs/gpu_small.yaml, from the
# shipped weights) or, with --model corun_small, CORUN's pre-training from scratch (gpu_corun_small.yaml).
#
#   bash training/gpu_train.sh --prepare          # here: the data pack (.gpu_data/) and the wheels (.gpu_check/)
#   bash training/gpu_train.sh --budget-s 360     # on the GPU machine, .gpu_data and .gpu_check carried along
#   bash training/gpu_train.sh --model corun_small --budget-s 360
#   bash training/gpu_train.sh --dry-run          # on a CPU: the same steps with the tiny model, about a minute
#
# The run ends inside --budget-s (default 360 s) whatever happens: set-up, training fitted to what is left
# (fit_steps_to_wall), release of best.pt and last.pt. If the mixed-precision run fails while more than half of
# the budget is left, it runs again in fp32. Afterwards, here: `dehaze evaluate --weights ... --scenes 1432 1433
# 1434` on the test split (never on the machine, never used to choose).
set -uo pipefail  # no -e: a failed step is logged and the outputs written so far still come back

cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 2
MODE=real
BUDGET=""
MODEL=dcmpnet_small
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) MODE=dry ;;
    --prepare) MODE=prepare ;;
    --budget-s) BUDGET=${2:?--budget-s needs seconds}; shift ;;
    --model) MODEL=${2:?--model needs dcmpnet_small or corun_small}; shift ;;
    -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
    *) echo "gpu_train.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done

case "$MODEL" in
  dcmpnet_small) CONFIG=training/configs/gpu_small.yaml; TINY=dcmpnet_tiny ;;
  corun_small) CONFIG=training/configs/gpu_corun_small.yaml; TINY=corun_tiny ;;
  *) echo "gpu_train.sh: --model must be dcmpnet_small or corun_small, not $MODEL" >&2; exit 2 ;;
esac

PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 PYTHONNOUSERSITE=1
if [ "$MODE" = prepare ]; then
  "$PY" -m training.gpu_pack --dest .gpu_data && exec bash tests/benchmarks/gpu_check.sh --prepare
fi
# `python -m commands train|release` below: without the dehaze command's glibc malloc settings, made for inference
export DEHAZE_MALLOC_TUNING=0

OUT=${OUT:-$(mktemp -d "${TMPDIR:-/tmp}/gpu_train.XXXXXX")}
DEST=$OUT/train
mkdir -p "$DEST"
LOG=$DEST/train.log
: >"$LOG"
START=$(date +%s)
log() { echo "[gpu_train +$(($(date +%s) - START))s] $*" | tee -a "$LOG" >&2; }
left() { echo $((START + BUDGET - $(date +%s))); }

SETS=()
if [ "$MODE" = dry ]; then
  BUDGET=${BUDGET:-90}
  DATA=$(mktemp -d "${TMPDIR:-/tmp}/gpu_train_data.XXXXXX")
  "$PY" -m training.gpu_pack --dest "$DATA" --max-train-scenes 3 >>"$LOG" 2>&1 || { log "pack failed"; exit 1; }
  RUN=$DATA/run
  SETS=(--set variant=$TINY --set device=cpu --set threads=2 --set init_from=null --set val_every=2
    --set data.crop=32 --set data.batch_size=2 --set data.num_workers=0 --set data.val_crop=64
    --set data.val_max_images=2 --set optim.amp=off)
  if [ "$MODEL" = corun_small ]; then
    SETS+=(--set "data.val_root=$DATA/sots-val" --set data.length=64
      --set "data.sources=[{root: $DATA/sots-train-clear, layout: reside, weight: 1.0}]")
  else
    SETS+=(--set "data.root=$DATA/sots-val" --set distill.length=64
      --set "distill.clear_sources=[{root: $DATA/sots-train-clear, layout: reside, weight: 1.0}]")
  fi
  RESERVE=40
else
  BUDGET=${BUDGET:-360}
  RUN=runs/$(basename "$CONFIG" .yaml)
  RESERVE=45  # the process's set-up before its clock starts (CUDA, workers), the last validation, the releases
  if [ -d .gpu_check/wheels ]; then
    SITE=/tmp/gpu_train_site
    mapfile -t WHEELS < <("$PY" -m tests.benchmarks.gpu_check wheels --dir .gpu_check/wheels 2>>"$LOG")
    if [ ${#WHEELS[@]} -gt 0 ] && "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
      --target "$SITE" "${WHEELS[@]}" >>"$LOG" 2>&1; then
      log "installed ${#WHEELS[@]} wheels into $SITE"
    fi
    export PYTHONPATH=$SITE
  fi
  export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv >>"$LOG"
  # The loader's workers pass each batch (~90 MB) through /dev/shm; a container's default 64 MB would kill them.
  shm=$(df -Pm /dev/shm 2>/dev/null | awk 'NR == 2 {print $4}')
  if [ -n "$shm" ] && [ "$shm" -lt 4096 ]; then
    mount -o remount,size=16G /dev/shm >>"$LOG" 2>&1 && log "/dev/shm had ${shm} MiB free: remounted at 16 GiB"
  fi
fi
log "$MODE run, budget ${BUDGET}s, config $CONFIG, out $DEST"

# train RUN_DIR EXTRA_SETS...: one training run fitted to the time left; its exit status.
train() {
  local run_dir=$1 wall
  shift
  wall=$(($(left) - RESERVE))
  if [ "$wall" -lt 10 ]; then
    log "no time left to train (${wall}s)"
    return 125
  fi
  rm -rf "$run_dir"
  log "training into $run_dir for ${wall}s of steps"
  timeout -k 10 $(($(left) - 15)) "$PY" -m commands train --config "$CONFIG" "${SETS[@]}" \
    --set "run_dir=$run_dir" --set "max_wall_seconds=$wall" "$@" >>"$LOG" 2>&1
}

train "$RUN"
rc=$?
if [ "$rc" -ne 0 ] && [ "$(left)" -gt $((BUDGET / 2)) ] && [ "$MODE" = real ]; then
  log "training exited $rc; again in fp32"
  RUN=${RUN}_fp32
  train "$RUN" --set optim.amp=off
  rc=$?
fi
log "training exit $rc"

for name in best last; do
  if [ -f "$RUN/$name.pt" ]; then
    "$PY" -m commands release --checkpoint "$RUN/$name.pt" --out "$DEST/${MODEL}_gpu_$name.pt" >>"$LOG" 2>&1 \
      && log "released $name.pt"
  fi
done
for file in log.jsonl config.yaml; do
  [ -f "$RUN/$file" ] && cp "$RUN/$file" "$DEST/$file"
done
log "done in $(($(date +%s) - START))s: $(ls "$DEST" | tr '\n' ' ')"
[ "$rc" -eq 0 ] && [ -f "$DEST/${MODEL}_gpu_best.pt" ]
