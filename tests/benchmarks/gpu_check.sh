#!/usr/bin/env bash
# One prepared GPU check (issue 15 §3): in one device run on a fresh GPU machine, install the project, run the CUDA
# tests (pytest -m gpu), time dcmpnet (paper size) and dcmpnet_small traced at batch 1/4/8/16, 1920x1080 and 620x460,
# fp32/bf16/fp16 against the authors' eager one-at-a-time protocol, and the service end to end (embedded; Redis + one
# GPU worker) at 8 and 64 clients. Phases: tests/benchmarks/gpu_check.py, whose docstring defines every figure.
#
#   bash tests/benchmarks/gpu_check.sh --prepare   # here (package registry reachable): wheels the device image lacks
#                                                  # and redis-server with its libraries, into .gpu_check/ (ignored)
#   bash tests/benchmarks/gpu_check.sh             # on the GPU machine, .gpu_check carried along: about 7 minutes
#   bash tests/benchmarks/gpu_check.sh --dry-run   # on a CPU: the same phases with the tiny model, well under a minute
#
# --budget-s N: the whole run's time (default 420 s; dry run 900 s, a safety net only). Every phase runs under
# `timeout` inside its share and saves its rows as it goes; the report is written at exit whatever happened:
# $OUT/gpu_check.json, $OUT/gpu_check.md and $OUT/gpu_check.log ($OUT: the environment's, else a new folder in /tmp).
set -uo pipefail  # no -e: a failed phase is recorded and the next one still runs

cd "$(dirname "${BASH_SOURCE[0]}")/../.." || exit 2
MODE=real
PREPARE=0
BUDGET=""
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) MODE=dry ;;
    --prepare) PREPARE=1 ;;
    --budget-s) BUDGET=${2:?--budget-s needs seconds}; shift ;;
    -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
    *) echo "gpu_check.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done

PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 PYTHONNOUSERSITE=1
if [ "$PREPARE" = 1 ]; then
  exec "$PY" -m tests.benchmarks.gpu_check prepare
fi
# Shares of the budget: the CUDA tests may use what the model, service and report phases leave (at most 150 s on
# the GPU); the model phase gets 60% of what is left after them, the service the rest. A dry run's budget is only a
# safety net: its phases share it loosely, so a slow CPU does not cut them short.
if [ "$MODE" = dry ]; then
  BUDGET=${BUDGET:-900} TESTS_CAP=600 RESERVE_PCT=10 MODEL_PCT=90
else
  BUDGET=${BUDGET:-420} TESTS_CAP=150 RESERVE_PCT=55 MODEL_PCT=60
fi
DRY=()
[ "$MODE" = dry ] && DRY=(--dry-run)

OUT=${OUT:-$(mktemp -d "${TMPDIR:-/tmp}/gpu_check.XXXXXX")}
mkdir -p "$OUT"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/gpu_check_work.XXXXXX")
LOG=$OUT/gpu_check.log
: >"$LOG"
START=$(date +%s)
END=$((START + BUDGET))

log() { echo "[gpu_check +$(($(date +%s) - START))s] $*" | tee -a "$LOG" >&2; }
left() { echo $((END - $(date +%s))); }
min() { if [ "$1" -lt "$2" ]; then echo "$1"; else echo "$2"; fi; }
step() { printf '%s=%s\n' "$1" "$2" >>"$WORK/install_steps.txt"; log "install: $1: $2"; }

# run_phase NAME SECONDS COMMAND...: COMMAND under a hard limit (TERM, KILL 10 s later), its output into the log;
# exit 124/137 when it was killed, 125 when too little time was left to start it.
run_phase() {
  local name=$1 limit=$2 rc
  shift 2
  if [ "$limit" -lt 5 ]; then
    log "$name: skipped, ${limit}s left"
    return 125
  fi
  log "$name: up to ${limit}s"
  timeout -k 10 "$limit" "$@" >>"$LOG" 2>&1
  rc=$?
  log "$name: exit $rc"
  return $rc
}

REPORTED=0
finish() {
  [ "$REPORTED" = 1 ] && return
  REPORTED=1
  log "report"
  timeout -k 5 60 "$PY" -m tests.benchmarks.gpu_check report --work "$WORK" --out "$OUT" --started "$START" \
    --budget-s "$BUDGET" "${DRY[@]}" 2>>"$LOG"
  rm -rf "$WORK"
  log "done: $OUT/gpu_check.json and $OUT/gpu_check.md ($MODE run, $(($(date +%s) - START)) s)"
}
trap finish EXIT
trap 'exit 130' INT TERM

log "$MODE run, budget ${BUDGET}s, python $("$PY" -c 'import sys; print(sys.version.split()[0])'), out $OUT"

# -- 1. install ------------------------------------------------------------------------------------------------------
if [ "$MODE" = real ]; then
  # No registry on the device: the wheels it lacks come carried in .gpu_check/wheels (gpu_check.sh --prepare).
  if [ -d .gpu_check/wheels ]; then
    mapfile -t WHEELS < <("$PY" -m tests.benchmarks.gpu_check wheels --dir .gpu_check/wheels 2>>"$LOG")
    if [ ${#WHEELS[@]} -gt 0 ]; then
      SITE=/tmp/gpu_check_site
      rm -rf "$SITE"
      names=$(printf '%s\n' "${WHEELS[@]}" | sed 's#.*/##; s#-.*##' | tr '\n' ' ')
      if run_phase "wheels" 120 "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
        --target "$SITE" "${WHEELS[@]}"; then
        step wheels "installed ${#WHEELS[@]}: $names"
      else
        step wheels "FAILED to install: $names"
      fi
      export PYTHONPATH=$SITE${PYTHONPATH:+:$PYTHONPATH}
    else
      step wheels "none missing"
    fi
  else
    step wheels "no .gpu_check/wheels: run 'gpu_check.sh --prepare' on a machine with a registry and carry .gpu_check"
  fi
  # The project itself, editable, with what the image and the wheels provide (its torch pin is not the image's).
  if run_phase "pip install -e ." 120 "$PY" -m pip install -q --no-index --no-deps --no-build-isolation -e .; then
    step project "pip install --no-deps -e . ok"
  else
    export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
    step project "pip install -e . FAILED; PYTHONPATH=$PWD instead"
  fi
  # redis-server: the image has none; .gpu_check/redis holds Debian's binary and the libraries it loads.
  if ! command -v redis-server >/dev/null 2>&1 && [ -x .gpu_check/redis/redis-server ]; then
    mkdir -p "$WORK/bin"
    cat >"$WORK/bin/redis-server" <<EOF
#!/bin/sh
LD_LIBRARY_PATH="$PWD/.gpu_check/redis\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}" exec "$PWD/.gpu_check/redis/redis-server" "\$@"
EOF
    chmod +x "$WORK/bin/redis-server"
    export PATH=$WORK/bin:$PATH
  fi
else
  step wheels "skipped (dry run)"
  step project "skipped (dry run): the checkout's installed environment is used"
fi
if command -v redis-server >/dev/null 2>&1; then
  step redis "$(command -v redis-server): $(timeout 10 redis-server --version 2>&1 | head -c 200)"
else
  step redis "not found: the Redis rows will say so"
fi

# -- 2. CUDA tests ---------------------------------------------------------------------------------------------------
# ../shared does not travel to a device machine: the training fixture reads its scenes from the data pack instead.
[ -d .gpu_data/sots-fixture ] && export DEHAZE_TEST_SOTS=$PWD/.gpu_data/sots-fixture
mapfile -t GPU_FILES < <(grep -rlE --include='*.py' 'mark\.gpu\b' tests | grep -v '^tests/benchmarks/' | sort)
TESTS_CMD=("$PY" -m pytest -m gpu -q -p no:cacheprovider --junitxml="$WORK/pytest_gpu.xml" "${GPU_FILES[@]}")
t0=$(date +%s)
run_phase "cuda tests" "$(min "$TESTS_CAP" $(($(left) - BUDGET * RESERVE_PCT / 100)))" "${TESTS_CMD[@]}"
rc=$?
"$PY" -c '
import json, sys
path, rc, seconds, command, *files = sys.argv[1:]
record = {"command": command, "exit_code": int(rc), "seconds": float(seconds), "files": files}
open(path, "w").write(json.dumps(record))
' "$WORK/cuda_tests.json" "$rc" "$(($(date +%s) - t0))" "pytest -m gpu ${GPU_FILES[*]}" "${GPU_FILES[@]}"

# -- 3. the environment's record, then the model: eager baseline and traced cells -----------------------------
REPORT_RESERVE=15
span=$(($(left) - REPORT_RESERVE))
model_end=$(($(date +%s) + span * MODEL_PCT / 100))
run_phase model $((model_end - $(date +%s) + 20)) "$PY" -m tests.benchmarks.gpu_check model --work "$WORK" \
  --deadline "$model_end" "${DRY[@]}"

# -- 4. service end to end -------------------------------------------------------------------------------------------
service_end=$((END - REPORT_RESERVE))
run_phase service $((service_end - $(date +%s) + 10)) "$PY" -m tests.benchmarks.gpu_check service --work "$WORK" \
  --deadline "$service_end" "${DRY[@]}"

exit 0  # the EXIT trap writes the report
