#!/usr/bin/env bash
# The GPU check, in two halves (docs/performance.md, "The GPU path"):
#   scripts/gpu-check.sh wheels [PYTHON_VERSION]   here, with PyPI: into .whl/, the wheels of requirements.lock's
#                                                  packages that the GPU image lacks (scripts/gpu-image.txt), for
#                                                  CPython PYTHON_VERSION (default 3.12, the GPU image's), and a
#                                                  copy of the IMDB mirror; under 64 MiB, what a device call carries
#   scripts/gpu-check.sh run OUT [key=value ...]   there, offline: install .whl/ into /tmp/site, then a quick perf
#                                                  ($PERF_ARGS) and the gpu-check sweep in bf16 and in float32 (the
#                                                  overrides apply to both), their reports and logs under OUT
set -euo pipefail
cd "$(dirname "$0")/.."
WHEELS=.whl
# Not needed to sweep and time on a GPU: the CPU kernels' sgemm, PostgreSQL's driver, the dashboard, the linter.
SKIP="onednn-cpu-gomp psycopg psycopg-binary optuna-dashboard bottle ruff"

normalised() { tr 'A-Z_.' 'a-z--'; }

wheels() {
  local python_version=${1:-3.12}
  rm -rf "$WHEELS" && mkdir -p "$WHEELS/data"
  grep -v '^#' scripts/gpu-image.txt | normalised | sort >"$WHEELS/present.txt"
  # name==version of each locked package, the image's and the skipped ones left out
  sed -n 's/^\([A-Za-z0-9_.-]*\)==\([^ ]*\).*/\1 \2/p' requirements.lock | while read -r name version; do
    key=$(echo "$name" | normalised)
    grep -qx "$key" "$WHEELS/present.txt" || [[ " $SKIP " == *" $key "* ]] || echo "$name==$version"
  done >"$WHEELS/requirements.txt"
  python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version "$python_version" \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 -d "$WHEELS" -r "$WHEELS/requirements.txt"
  cp -r "${BENCH_DATA_DIR:-../shared/data}/imdb" "$WHEELS/data/"
  echo "$WHEELS: $(ls "$WHEELS"/*.whl | wc -l) wheels, $(du -sm "$WHEELS" | cut -f1) MiB with the IMDB mirror"
}

run() {
  local out=$1
  shift
  mkdir -p "$out"
  python3 -m pip install --quiet --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
    "$WHEELS"/*.whl
  export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 BENCH_HOME=/tmp/bench-home BENCH_DATA_DIR=$PWD/$WHEELS/data
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv >"$out/gpu.txt" 2>&1 || true
  # shellcheck disable=SC2086  # PERF_ARGS: several arguments
  python3 -m bench.perf ${PERF_ARGS:---repeats 3 --load-repeats 1} --datasets imdb --out "$out/perf.md" 2>&1 |
    tee "$out/perf.log"
  for precision in auto 32-true; do
    name=gpu-check-$([[ $precision == auto ]] && echo auto || echo fp32)
    python3 -m bench sweep sweeps/gpu-check.yaml "name=$name" "precision=$precision" "$@" --reports "$out" \
      2>&1 | tee "$out/$name.log"
  done
}

case "${1:-}" in
  wheels) shift; wheels "$@" ;;
  run) shift; run "$@" ;;
  *) echo "usage: scripts/gpu-check.sh wheels [PYTHON_VERSION] | run OUT [key=value ...]" >&2; exit 2 ;;
esac
