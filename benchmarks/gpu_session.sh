#!/usr/bin/env bash
# One GPU session of benchmarks/bench_gpu.py: the figures of docs/MEASUREMENTS.md's GPU rows.
#
# Prepare on the development machine (needs pip's registry; BUILD_PYTHON is a Python with
# setuptools >= 69, e.g. the project's .venv):
#
#   bash benchmarks/gpu_session.sh prepare
#
# It fills .whl/ (ignored through .git/info/exclude: `echo /.whl/ >> .git/info/exclude`) with
# pfednas built from the committed HEAD (git archive, so uncommitted edits stay out; the
# commit is in .whl/pfednas.commit) and, for CPython 3.12 on x86-64, the packages pfednas
# imports that the lent GPU machine's image lacks (flwr 1.41 and its needs, flwr-datasets,
# datasets, hydra-core, omegaconf, ...), plus grpcio, protobuf, typer and fsspec at the
# versions the project resolves (flwr's generated code checks the first two; datasets caps
# fsspec). That image's torch (2.11, CUDA) is used as it is: nothing here installs torch.
#
# Run on the GPU machine (device tool: run, carry [".whl"], timeout_s 480):
#
#   PYTHONUNBUFFERED=1 bash benchmarks/gpu_session.sh
#
# It installs .whl/*.whl into /tmp/site (--no-deps, no index), writes 50,000 + 10,000
# CIFAR-10-shaped images of random pixels (benchmarks/make_fake_cifar.py; the machine has no
# CIFAR-10 and no network), then runs, in this order, each under what is left of BUDGET
# seconds (450 by default; a step that would start with under 20 s left is skipped):
#
#   bench_gpu.py --repeats 11 --samples 2048                          main preset, batch 32
#   bench_gpu.py --repeats 1 --samples 256 --rounds 5 --workers 1     main preset, rounds
#   bench_gpu.py --repeats 1 --samples 256 --rounds 5 --workers 4
#   bench_gpu.py --batch 256 --repeats 11 --samples 8192              main preset, batch 256
#   bench_gpu.py --preset paper --repeats 5 --samples 2048            paper preset, batch 32
#   bench_gpu.py --preset paper --repeats 1 --samples 256 --rounds 4 --workers 4
#   bench_gpu.py --preset paper --repeats 1 --samples 256 --rounds 4 --workers 1
#
# The rounds are FedAvg+FT with the largest subnet (bench_gpu.py's default method); the
# paper preset's first round takes far longer than the others, so 4 rounds keep it out of
# the median. Each of these commands ran on one H100 (docs/MEASUREMENTS.md has the
# figures); their times there add up to about 380 s. The output goes to $OUT/session.log;
# while the round runs go, nvidia-smi is read every second (GPU utilization and memory,
# each process's memory) into $OUT/smi_<step>.txt.
# DRY=1 runs the same steps at tiny sizes (one pass, one round, 1,000-image batch files, the
# paper preset's loops only) with PYTHON (default python3) and only the pfednas wheel, to
# check the script on a CPU machine.
set -uo pipefail
cd "$(dirname "$0")/.."

WHEELS=(flwr==1.41.0 flwr-datasets==0.6.1 datasets==4.8.5 dill==0.4.1 multiprocess==0.70.19
        hydra-core==1.3.8 omegaconf==2.3.1 cryptography==50.0.2 cffi==2.1.1 pycparser==3.12
        pycryptodome==3.24.1 grpcio-health-checking==1.81.1 grpcio==1.85.3 protobuf==6.33.6
        typer==0.20.1 fsspec==2026.2.0)
SDIST_ONLY=(antlr4-python3-runtime==4.9.3 iterators==0.0.2)  # built here as pure wheels

prepare() {
  local build_python=${BUILD_PYTHON:-.venv/bin/python} src
  rm -rf .whl && mkdir -p .whl || return 1
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --platform manylinux1_x86_64 -d .whl "${WHEELS[@]}" || return 1
  python3 -m pip wheel -q --no-deps -w .whl "${SDIST_ONLY[@]}" || return 1
  src=$(mktemp -d)
  git archive HEAD src strategies clients conf pyproject.toml README.md | tar -x -C "$src"
  "$build_python" -m pip wheel -q --no-deps --no-build-isolation -w .whl "$src" || return 1
  rm -rf "$src"
  git rev-parse --short HEAD > .whl/pfednas.commit
  ls .whl && du -sh .whl
}

if [ "${1:-run}" = prepare ]; then
  prepare
  exit
fi

OUT=${OUT:-/tmp/gpu_session}
PY=${PYTHON:-python3}
DRY=${DRY:-0}
BUDGET=${BUDGET:-450}
START=$(date +%s)
mkdir -p "$OUT"

left() { echo $((START + BUDGET - $(date +%s))); }

# step NAME CAP COMMAND...: COMMAND under min(CAP, what is left), its time and exit status
step() {
  local name=$1 cap=$2 remaining t0 rc
  shift 2
  remaining=$(left)
  if ((remaining < 20)); then
    echo "## $name: skipped, ${remaining} s left"
    return
  fi
  ((cap > remaining)) && cap=$remaining
  echo "## $name (at most ${cap} s): $*"
  t0=$(date +%s)
  timeout -k 5 "$cap" "$@"
  rc=$?
  echo "## $name: exit $rc after $(($(date +%s) - t0)) s"
}

# smi_start FILE / smi_stop: nvidia-smi read every second while a step runs
SMI=
smi_start() {
  command -v nvidia-smi >/dev/null || return 0
  (while :; do
     echo "t=$(date +%s) gpu: $(nvidia-smi --query-gpu=utilization.gpu,memory.used \
       --format=csv,noheader | tr '\n' ' ')apps: $(nvidia-smi \
       --query-compute-apps=pid,used_memory --format=csv,noheader | tr '\n' ';')"
     sleep 1
   done) >> "$OUT/$1" 2>&1 &
  SMI=$!
}
smi_stop() {
  [ -n "$SMI" ] && kill "$SMI" 2>/dev/null
  SMI=
}

session() {
  local bench=benchmarks/bench_gpu.py reps=11 samples=2048 big=8192 rounds=5 paper_rounds=4
  local per_batch=10000 site=/tmp/site paper_reps=5 pass=256 w
  if [ "$DRY" = 1 ]; then
    reps=1 samples=128 big=256 rounds=1 paper_rounds=0 per_batch=1000 site=/tmp/site-dry
    paper_reps=1 pass=64
  fi
  echo "## start $(date -u +%FT%TZ); pfednas at $(cat .whl/pfednas.commit 2>/dev/null)"
  if [ "$DRY" = 1 ]; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target "$site" .whl/pfednas-*.whl || return 1
  else
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target "$site" .whl/*.whl || return 1
  fi
  export PYTHONPATH=$site PYTHONUNBUFFERED=1
  nvidia-smi --query-gpu=name,driver_version,memory.total,memory.used --format=csv
  "$PY" -c "import sys, torch, flwr, pfednas; print('python', sys.version.split()[0], \
'torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.is_available(), \
'flwr', flwr.__version__, 'pfednas from', pfednas.__file__)"
  echo "## cores: $(nproc); install done at $(($(date +%s) - START)) s"
  "$PY" benchmarks/make_fake_cifar.py /tmp/fake_cifar --per-batch "$per_batch"
  export PFEDNAS_CIFAR_DIR=/tmp/fake_cifar

  step main-b32 90 "$PY" $bench --repeats $reps --samples $samples
  for w in 1 4; do
    smi_start "smi_main_w$w.txt"
    step "main-w$w" 90 "$PY" $bench --repeats 1 --samples $pass --rounds $rounds --workers $w
    smi_stop
  done
  step main-b256 60 "$PY" $bench --batch 256 --repeats $reps --samples $big
  step paper-b32 60 "$PY" $bench --preset paper --repeats $paper_reps --samples $samples
  for w in 4 1; do
    smi_start "smi_paper_w$w.txt"
    step "paper-w$w" 200 "$PY" $bench --preset paper --repeats 1 --samples $pass \
      --rounds $paper_rounds --workers $w
    smi_stop
  done
  echo "## end after $(($(date +%s) - START)) s"
}

session 2>&1 | tee -a "$OUT/session.log"
