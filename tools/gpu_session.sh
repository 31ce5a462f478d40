#!/usr/bin/env bash
# All the GPU measurements of one session, for a lent GPU machine (see README, "Performance").
#
# CIFAR-10 (178 MB) cannot travel in one call (at most 64 MiB each), so it travels in parts in
# ignored folders .stage1/ .stage2/ .stage3/ and is gathered outside the repository, in $STAGE:
#   tools/gpu_session.sh smoke   # stage data_batch_1 + test_batch + batches.meta + MD5SUMS,
#                                # then quick CUDA checks (smoke mode needs only those)
#   tools/gpu_session.sh stage   # stage the next files (two batches fit in one call)
#   tools/gpu_session.sh run     # stage the last files, then every full measurement
# Here, before the first call, fill one ignored folder per call with its part, gzipped (31.0 MB a
# batch becomes 28.3 MB, which leaves the rest of the tree ~10 MB), and name that call's folder
# in its carry (.stage1, then .stage2, then .stage3): the calls then follow each other at once.
#   D=../shared/cifar10/cifar-10-batches-py; rm -rf .stage*; mkdir .stage1 .stage2 .stage3
#   for f in data_batch_1 test_batch; do gzip -c $D/$f >.stage1/$f.gz; done
#   cp $D/batches.meta $D/../MD5SUMS .stage1/
#   for f in data_batch_2 data_batch_3; do gzip -c $D/$f >.stage2/$f.gz; done
#   for f in data_batch_4 data_batch_5; do gzip -c $D/$f >.stage3/$f.gz; done
# MD5SUMS (the shared copy's own sums, beside cifar-10-batches-py/) must travel too: without it
# the md5 check refuses the re-packed files. The machine forgets everything 30 s after a call,
# so make the three calls back to back, with nothing in between, and give_back after the last.
# If the run call says the earlier parts are gone, stage them again without the smoke tests:
# stage (carry .stage1), stage (carry .stage2), run (carry .stage3).
#
# At most 8 files come back from $OUT, so every log goes to $LOGS/<mode>/ and, after each step,
# into one archive, $OUT/<mode>-logs.tar.gz: a call stopped at its limit still brings back the
# logs of the steps before.
#
# A session has 15 min of device time in all, the machine's start (1-2 min) and idle waits
# included. Each mode stops starting steps at its DEADLINE (seconds): smoke 200, run 450, so that
# start + smoke + stage + run stay under 15 min. Give each call a timeout_s about 60 s above its
# DEADLINE. The run mode goes in order of need: the speed-run's 5 seeds (issue 16's target), lesson
# 08's run time, the lookahead and EMA pairs, then the re-checks of what 2026-11-27's H100 session
# measured already (benchmark, modern recipe, DDP, the other notebooks), which the deadline may
# skip.
set -u
STAGE=${STAGE:-/root/cifar10}
OUT=${OUT:-/tmp/gpu_session}
mode=${1:-stage}
case $mode in smoke | stage | run) ;; *) echo "usage: $0 smoke|stage|run"; exit 2 ;; esac
LOGS=${LOGS:-/tmp/gpu_logs}/$mode
rm -rf "$LOGS"  # a second try on a warm machine packs only its own logs
mkdir -p "$STAGE/cifar-10-batches-py" "$OUT" "$LOGS"
for f in .stage?/*; do  # what earlier calls left there too: a few seconds
  [ -f "$f" ] || continue
  case $f in
    *.gz) gunzip -c "$f" >"$STAGE/cifar-10-batches-py/$(basename "$f" .gz)" ;;
    *) cp "$f" "$STAGE/cifar-10-batches-py/" ;;
  esac
done
if [ -f "$STAGE/cifar-10-batches-py/MD5SUMS" ]; then
  mv "$STAGE/cifar-10-batches-py/MD5SUMS" "$STAGE/"
fi
ls -l "$STAGE/cifar-10-batches-py"
[ "$mode" = stage ] && exit 0
if [ "$mode" = run ]; then
  for f in MD5SUMS cifar-10-batches-py/{batches.meta,test_batch,data_batch_{1,2,3,4,5}}; do
    if [ ! -f "$STAGE/$f" ]; then
      echo "$STAGE/$f is missing: this call's part was not carried, or the machine was given" \
        "back between calls and lost the earlier parts. Stage them again, back to back:" \
        "stage (carry .stage1), stage (carry .stage2), run (carry .stage3)."
      exit 3
    fi
  done
fi
if [ "$mode" = smoke ]; then DEADLINE=${DEADLINE:-200}; else DEADLINE=${DEADLINE:-450}; fi

export CIFAR_COURSE_DATA=$STAGE PYTHONPATH=$PWD PYTHONUNBUFFERED=1 MPLBACKEND=Agg TQDM_DISABLE=1
unset CIFAR_COURSE_SMOKE
step() {  # step NAME SECONDS COMMAND...: run with a time limit, log to $LOGS/NAME.log
  local name=$1 limit=$2 left=$((DEADLINE - SECONDS))
  shift 2
  if [ "$left" -lt 20 ]; then echo "=== $name: skipped, ${left}s left"; return; fi
  [ "$limit" -gt "$left" ] && limit=$left
  echo "=== $name (started at ${SECONDS}s, limit ${limit}s)"
  timeout -k 10 "$limit" "$@" >"$LOGS/$name.log" 2>&1
  echo "=== $name: exit $? at ${SECONDS}s"
  grep -v '^\s*$' "$LOGS/$name.log" | tail -n "${TAIL:-25}"
  pack
}
pack() { tar -czf "$OUT/$mode-logs.tar.gz" -C "$LOGS" .; }
trap pack EXIT
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm,temperature.gpu \
  --format=csv | tee "$LOGS/gpu.txt"
python3 -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', \
torchvision.__version__, torch.cuda.get_device_name(), 'CPUs', __import__('os').cpu_count())" \
  | tee -a "$LOGS/gpu.txt"

if [ "$mode" = smoke ]; then
  export CIFAR_COURSE_SMOKE=1
  # the CUDA tests first: FastTrainer's CUDA graphs (test_fast) and the speed-run (test_speedrun)
  step smoke_tests 150 python3 -m pytest -q -p no:cacheprovider tests/test_fast.py \
    tests/test_speedrun.py
  step smoke_speedrun 45 python3 -m cifar_course train --recipe speedrun --device cuda \
    --epochs 2 --batch-size 256 --out /tmp/smoke_ck --logdir /tmp/smoke_tb --overwrite
  exit 0
fi

step data 60 python3 -m cifar_course data
# The speed-run recipe (issue 16): 5 seeds of SpeedNet, mean and spread, in $LOGS/speedrun/
TAIL=14 step speedrun 240 python3 tools/speedrun_seeds.py --seeds 0 1 2 3 4 --device cuda \
  --out "$LOGS/speedrun"
# lesson 08's "Run time on a GPU" row (its code as one plain script; no Jupyter there)
TAIL=30 step notebook_08 150 python3 tools/run_notebook_code.py notebooks/08_speedrun.ipynb
# lookahead and the weight average, measured on CPUs and on the H200 of 2026-11-28 (benchmarks/):
# two seeds without the lookahead, two with --ema on top of it
TAIL=14 step speedrun_no_lookahead 90 python3 tools/speedrun_seeds.py --seeds 0 1 \
  --device cuda --out "$LOGS/speedrun_no_lookahead" -- --no-lookahead
TAIL=14 step speedrun_ema 90 python3 tools/speedrun_seeds.py --seeds 0 1 --device cuda \
  --out "$LOGS/speedrun_ema" -- --ema
# re-checks of 2026-11-27's H100 figures: FastTrainer has changed since (7b033cb)
TAIL=14 step benchmark 120 python3 -m cifar_course benchmark --device cuda --epochs 10
step modern 60 python3 -m cifar_course train --recipe modern --device cuda \
  --out /tmp/modern_ck --logdir /tmp/modern_tb --overwrite
# DDP's own overhead on one card (issue 14): the modern recipe's eager loop, plain and under
# torchrun with one process (and one process per GPU where there are several)
step ddp 240 python3 tools/ddp_benchmark.py --device cuda --recipe modern --out "$LOGS/ddp"
TAIL=40 step notebooks 400 python3 tools/run_notebook_code.py notebooks/0[1-7]*.ipynb
