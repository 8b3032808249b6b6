#!/usr/bin/env bash
# One prepared GPU check (cannot be run on the 2-core CPU development machine).
#
# Sized to finish in under 8 minutes on one H100 (80 GB): the install is skipped when CuPy
# already imports (device machines have no network), the GPU unit tests are capped at 4 min,
# and the engine benchmark runs 2 warm-up + 5 timed iterations of each engine on
#   30x512  - the seed paper's sim512: 900 frames of 512^2 (DM exit waves ~0.9 GB), and
#   100x128 - 10,000 frames of 128^2 (DM exit waves ~1.3 GB),
# simulated on the host first (~10-30 s each with 16 cores).
#
#   bash benchmarks/gpu.sh            # from the repository root; writes gpu_*.json/log in $OUT
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-.}
mkdir -p "$OUT"
PY=${PYTHON:-python}
if ! "$PY" -c "import cupy, ptychompi, pytest" 2>/dev/null; then
    "$PY" -m pip install -q -e ".[gpu,test,mpich]" || echo "pip install failed (offline?)"
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
"$PY" -c "import cupy; print('cupy', cupy.__version__, 'devices',
cupy.cuda.runtime.getDeviceCount())" || { echo "no usable CuPy/GPU"; exit 1; }

echo "== GPU unit tests (cap 240 s)"
PTYCHOMPI_DEVICE=gpu timeout 240 "$PY" -m pytest -q -x tests/unit 2>&1 | tail -25 \
    | tee "$OUT/gpu_tests.log"

echo "== engines on the GPU (cap 300 s)"
timeout 300 "$PY" benchmarks/engines.py --device gpu --sizes 30x512,100x128 \
    --engines epie,dm,lsqml --iterations 5 --warmup 2 --subpixel on \
    --json "$OUT/gpu_engines.json" 2>&1 | tee "$OUT/gpu_engines.log"
