#!/usr/bin/env bash
# All the GPU measurements of one session, for a lent GPU machine (see README, "Performance").
#
# CIFAR-10 (178 MB) cannot travel in one call (at most 64 MiB each), so it travels in parts in
# the ignored folder .stage/ and is gathered outside the repository, in $STAGE:
#   tools/gpu_session.sh smoke   # stage data_batch_1 + test_batch + batches.meta + MD5SUMS,
#                                # then quick CUDA checks (smoke mode needs only those)
#   tools/gpu_session.sh stage   # stage the next files (two batches fit in one call)
#   tools/gpu_session.sh run     # stage the last files, then every full measurement
# MD5SUMS (the shared copy's own sums, beside cifar-10-batches-py/) must travel too: without it
# the md5 check refuses the re-packed files. The machine forgets everything 30 s after a call.
# Logs go to $OUT (the device tool brings that folder back).
set -u
STAGE=${STAGE:-/root/cifar10}
OUT=${OUT:-/tmp/gpu_session}
DEADLINE=${DEADLINE:-540}  # seconds: later steps are skipped, so the call ends in time
mkdir -p "$STAGE/cifar-10-batches-py" "$OUT"
if [ -d .stage ]; then cp .stage/* "$STAGE/cifar-10-batches-py/"; fi
if [ -f "$STAGE/cifar-10-batches-py/MD5SUMS" ]; then
  mv "$STAGE/cifar-10-batches-py/MD5SUMS" "$STAGE/"
fi
ls -l "$STAGE/cifar-10-batches-py"
mode=${1:-stage}
[ "$mode" = stage ] && exit 0

export CIFAR_COURSE_DATA=$STAGE PYTHONPATH=$PWD PYTHONUNBUFFERED=1 MPLBACKEND=Agg TQDM_DISABLE=1
unset CIFAR_COURSE_SMOKE
step() {  # step NAME SECONDS COMMAND...: run with a time limit, log to $OUT/NAME.log
  local name=$1 limit=$2 left=$((DEADLINE - SECONDS))
  shift 2
  if [ "$left" -lt 20 ]; then echo "=== $name: skipped, ${left}s left"; return; fi
  [ "$limit" -gt "$left" ] && limit=$left
  echo "=== $name (started at ${SECONDS}s, limit ${limit}s)"
  timeout "$limit" "$@" >"$OUT/$name.log" 2>&1
  echo "=== $name: exit $? at ${SECONDS}s"
  grep -v '^\s*$' "$OUT/$name.log" | tail -n "${TAIL:-25}"
}
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm,temperature.gpu \
  --format=csv | tee "$OUT/gpu.txt"
python3 -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', \
torchvision.__version__, torch.cuda.get_device_name(), 'CPUs', __import__('os').cpu_count())" \
  | tee -a "$OUT/gpu.txt"

if [ "$mode" = smoke ]; then
  export CIFAR_COURSE_SMOKE=1
  step smoke_tests 180 python3 -m pytest -q -p no:cacheprovider tests/test_fast.py \
    tests/test_speedrun.py
  step smoke_speedrun 60 python3 -m cifar_course train --recipe speedrun --device cuda \
    --epochs 2 --batch-size 256 --out /tmp/smoke_ck --logdir /tmp/smoke_tb
  step smoke_benchmark 60 python3 -m cifar_course benchmark --device cuda --epochs 1
  step smoke_modern 60 python3 -m cifar_course train --recipe modern --device cuda --epochs 2 \
    --out /tmp/smoke_ck --logdir /tmp/smoke_tb
  exit 0
fi

step data 60 python3 -m cifar_course data
# The speed-run recipe (issue 16): 5 seeds of SpeedNet, mean and spread, in $OUT/speedrun/
TAIL=14 step speedrun 300 python3 tools/speedrun_seeds.py --seeds 0 1 2 3 4 --device cuda \
  --out "$OUT/speedrun"
# lookahead and the weight average have only been measured on CPUs (lesson 08, benchmarks/):
# two seeds without the lookahead, two with --ema on top of it
TAIL=14 step speedrun_no_lookahead 120 python3 tools/speedrun_seeds.py --seeds 0 1 \
  --device cuda --out "$OUT/speedrun_no_lookahead" -- --no-lookahead
TAIL=14 step speedrun_ema 120 python3 tools/speedrun_seeds.py --seeds 0 1 --device cuda \
  --out "$OUT/speedrun_ema" -- --ema
TAIL=14 step benchmark 300 python3 -m cifar_course benchmark --device cuda --epochs 10
step modern 150 python3 -m cifar_course train --recipe modern --device cuda \
  --out /tmp/modern_ck --logdir /tmp/modern_tb
# DDP's own overhead on one card (issue 14): the modern recipe's eager loop, plain and under
# torchrun with one process (and one process per GPU where there are several)
step ddp 240 python3 tools/ddp_benchmark.py --device cuda --recipe modern --out "$OUT/ddp"
TAIL=40 step notebooks 400 python3 tools/run_notebook_code.py notebooks/0*.ipynb
