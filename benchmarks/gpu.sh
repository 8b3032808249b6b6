#!/usr/bin/env bash
# The prepared GPU check: one command, offline, under 8 minutes on one H100.
#
# Where a registry is reachable, first: bash benchmarks/gpu_wheels.sh (fills .whl/, ~26 MiB).
# Then, on the GPU machine (no network), with .whl carried, from the repository root:
#   bash benchmarks/gpu.sh            # figures and logs in $OUT (default out/gpu), 8 files
#
# Stages, each under its own `timeout` (a hang costs only its stage; the next one runs) and
# all within PTYCHOMPI_GPU_BUDGET seconds (default 450):
#   install   the carried wheels and ptychompi, offline, without dependencies (gpu_install.sh)
#   import    ptychompi imports from the installed copy
#   mpi       2 ranks start through the carried MPICH (else the MPI stage is skipped, said so)
#   gpu       CuPy sees a device -- else one line "gpu.sh: no GPU ..." and exit 3
#   kernels   tests/unit/test_kernels.py: the CUDA kernels against their numpy references
#   engines   benchmarks/gpu_engines.py: ePIE, DM, LSQML on 900 frames of 512² and 10,000
#             of 128², 2 warm-up + 5 timed iterations; frames/s, memory, x cuFFT floor
#   engines2  the same on 2 ranks sharing the GPU (mpiexec -n 2; halos staged through the host:
#             the carried MPICH is not known to read GPU memory)
#   unit      the unit suite with PTYCHOMPI_DEVICE=gpu, the files that reconstruct first,
#             capped by what is left of the budget (its -v log shows how far it got)
# Exit: 0 all stages passed, 1 some stage failed (see gpu_stages.tsv), 3 no GPU, 4 the
# offline install failed.
#
# Files in $OUT: gpu_check.log (everything), gpu_stages.tsv (stage, exit code, seconds, note),
# gpu_env.txt, gpu_kernels.log, gpu_engines.json, gpu_engines_mpi.json, gpu_engines.md
# (tables), gpu_tests.log.
#
# Settings: PYTHON (default python3), OUT, PTYCHOMPI_GPU_BUDGET, PTYCHOMPI_GPU_SKIP_INSTALL=1
# (use the environment as it is: tests and rehearsals), PTYCHOMPI_GPU_SKIP_MPI=1,
# PTYCHOMPI_GPU_DRY=1 (every stage on the CPU at tiny sizes: the plumbing, tested here),
# PTYCHOMPI_WHEELS (default .whl).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-out/gpu}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
PY=${PYTHON:-python3}
BUDGET=${PTYCHOMPI_GPU_BUDGET:-450}
START=$SECONDS
FAILED=0
exec > >(tee "$OUT/gpu_check.log") 2>&1
TEE_PID=$!
printf 'stage\texit\tseconds\tnote\n' > "$OUT/gpu_stages.tsv"
export PYTHONUNBUFFERED=1 OMPI_MCA_rmaps_base_oversubscribe=1

record() {  # record STAGE EXIT SECONDS NOTE
    printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" >> "$OUT/gpu_stages.tsv"
    [ "$2" = 0 ] || [ "$2" = skipped ] || FAILED=1
}

stage() {  # stage NAME CAP_SECONDS LOG CMD...: run under timeout, capped by the budget
    local name=$1 cap=$2 log=$3 left rc t0
    shift 3
    left=$(( BUDGET - (SECONDS - START) ))
    # the import gates everything: its own cap only; the others share what the budget leaves
    [ "$name" = import ] || [ "$cap" -le "$left" ] || cap=$left
    if [ "$cap" -lt 10 ]; then
        echo "== $name: skipped, the budget ($BUDGET s) is spent"
        record "$name" skipped 0 "budget spent"
        FAILED=1
        return 1
    fi
    echo "== $name (cap ${cap} s)"
    t0=$SECONDS
    timeout -k 10 "$cap" "$@" 2>&1 | tee -a "$log"
    rc=${PIPESTATUS[0]}
    local note=ok
    [ "$rc" = 0 ] || note="failed"
    [ "$rc" = 124 ] || [ "$rc" = 137 ] && note="timed out after ${cap} s"
    record "$name" "$rc" $(( SECONDS - t0 )) "$note"
    echo "== $name: $note ($(( SECONDS - t0 )) s)"
    return "$rc"
}

finish() {
    rm -f "$OUT"/*.tmp
    echo "== done in $(( SECONDS - START )) s; stages:"
    column -t -s $'\t' "$OUT/gpu_stages.tsv" 2>/dev/null || cat "$OUT/gpu_stages.tsv"
    exec >&- 2>&-
    wait "$TEE_PID" 2>/dev/null  # gpu_check.log complete before the machine takes $OUT
    exit "$1"
}

# --------------------------------------------------------------------------- install, import
. benchmarks/gpu_install.sh
if [ "${PTYCHOMPI_GPU_SKIP_INSTALL:-0}" = 1 ]; then
    record install 0 0 "skipped (PTYCHOMPI_GPU_SKIP_INSTALL=1)"
    GPU_PREFIX=$("$PY" -c "import sys; print(sys.prefix)")
    export PATH="$GPU_PREFIX/bin:$PATH"
else
    t0=$SECONDS
    if ! timeout 120 bash -c '. benchmarks/gpu_install.sh; PY=$1; gpu_install' _ "$PY"; then
        record install 1 $(( SECONDS - t0 )) "offline install failed"
        echo "gpu.sh: the offline install failed (see above); nothing was measured"
        finish 4
    fi
    GPU_PREFIX=$("$PY" -c "import sys; print(sys.prefix)")
    export PATH="$GPU_PREFIX/bin:$PATH" MPI4PY_LIBMPI="$GPU_PREFIX/lib/libmpi.so.12"
    record install 0 $(( SECONDS - t0 )) "offline into $GPU_PREFIX"
fi

stage import 60 "$OUT/gpu_env.txt" bash -c 'cd /tmp && "$1" -c "
import sys, numpy, scipy, h5py, ptychompi
print(\"python\", sys.version.split()[0], \"numpy\", numpy.__version__, \"scipy\",
      scipy.__version__, \"h5py\", h5py.__version__, \"ptychompi\", ptychompi.__version__,
      \"from\", ptychompi.__file__)
from importlib import import_module, metadata
for name, dist in ((\"hdf5plugin\", \"hdf5plugin\"), (\"pyfftw\", \"pyFFTW\"),
                   (\"pytest_mpi\", \"pytest-mpi\"), (\"aiosmtpd\", \"aiosmtpd\"),
                   (\"mpi4py\", \"mpi4py\"), (\"cupy\", None)):
    try:
        mod = import_module(name)
        print(name, metadata.version(dist) if dist else mod.__version__)
    except Exception as exc:
        print(name, \"MISSING:\", type(exc).__name__, exc)
"' _ "$PY" || { echo "gpu.sh: ptychompi does not import; nothing was measured"; finish 4; }

MPI_OK=0
if [ "${PTYCHOMPI_GPU_SKIP_MPI:-0}" = 1 ]; then
    record mpi skipped 0 "PTYCHOMPI_GPU_SKIP_MPI=1"
else
    t0=$SECONDS
    # not in a subshell: it may export HYDRA_LAUNCHER for the later stages
    gpu_mpi_check > "$OUT/gpu_mpi.tmp" 2>&1 && MPI_OK=1
    msg=$(cat "$OUT/gpu_mpi.tmp"); rm -f "$OUT/gpu_mpi.tmp"
    echo "$msg" | tee -a "$OUT/gpu_env.txt"
    record mpi $(( 1 - MPI_OK )) $(( SECONDS - t0 )) "$(echo "$msg" | tail -n 1)"
fi

# --------------------------------------------------------------------------- is there a GPU?
if [ "${PTYCHOMPI_GPU_DRY:-0}" = 1 ]; then  # the stages' plumbing, on the CPU at tiny sizes
    DEVICE=cpu SIZES1=(--small) SIZES2=(--small) UNIT=(tests/unit/test_simulate.py)
    record gpu 0 0 "dry run on the CPU (PTYCHOMPI_GPU_DRY=1)"
else
    DEVICE=gpu SIZES1=(--sizes 30x512,100x128) SIZES2=(--sizes 100x128,30x512)
    UNIT=(tests/unit/test_engines.py tests/unit/test_checkpoint.py
          tests/unit/test_geometry_backend.py tests/unit/test_failure.py
          tests/unit/test_simulate.py tests/unit)  # the files that reconstruct first
    reason=$(timeout 60 "$PY" -c "
import cupy
n = cupy.cuda.runtime.getDeviceCount()
assert n > 0, 'CuPy sees no device'
" 2>&1 | tail -n 1) || {
        record gpu 3 0 "no GPU: ${reason:-no answer}"
        echo "gpu.sh: no GPU present (${reason:-CuPy did not answer}); the install, import and" \
             "MPI stages ran, the GPU stages did not"
        finish 3
    }
    { nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
      "$PY" -c "import cupy; cupy.show_config()" || true; } 2>&1 | tee -a "$OUT/gpu_env.txt"
    record gpu 0 0 "$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1)"
fi

# --------------------------------------------------------------------------- GPU stages
stage kernels 60 "$OUT/gpu_kernels.log" \
    "$PY" -m pytest -q -p no:cacheprovider -rs tests/unit/test_kernels.py

stage engines 200 /dev/null \
    "$PY" benchmarks/gpu_engines.py --device "$DEVICE" "${SIZES1[@]}" --warmup 2 \
    --iterations 5 --json "$OUT/gpu_engines.json" --table "$OUT/gpu_engines.md"

if [ "$MPI_OK" = 1 ]; then
    stage engines2 80 /dev/null \
        mpiexec -n 2 "$PY" benchmarks/gpu_engines.py --device "$DEVICE" "${SIZES2[@]}" \
        --cuda-aware no --warmup 2 --iterations 5 --json "$OUT/gpu_engines_mpi.json" \
        --table "$OUT/gpu_engines_mpi.tmp"
    { echo; echo "2 ranks on one GPU:"; cat "$OUT/gpu_engines_mpi.tmp" 2>/dev/null; } \
        >> "$OUT/gpu_engines.md"
else
    echo "== engines2: skipped, no MPI launcher works here (see the mpi stage)"
    record engines2 skipped 0 "no working MPI launcher"
fi

TIMEOUT_FLAG=()
"$PY" -c "import pytest_timeout" 2>/dev/null && TIMEOUT_FLAG=(--timeout 90)
PTYCHOMPI_DEVICE=$DEVICE PTYCHOMPI_SKIP_SHARED_DATA=1 stage unit 150 "$OUT/gpu_tests.log" \
    "$PY" -m pytest -v -p no:cacheprovider -rfEs --maxfail 30 "${TIMEOUT_FLAG[@]}" \
    --continue-on-collection-errors --ignore tests/unit/test_gui_browser.py "${UNIT[@]}"

finish "$FAILED"
