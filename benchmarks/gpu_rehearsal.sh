#!/usr/bin/env bash
# Dress rehearsal of the offline GPU check, here, without a GPU.
#
# 1. A fresh Python 3.12 virtualenv (.venv-gpu-rehearsal) with only what the GPU machine's
#    image lists that ptychompi and its tests use: numpy, scipy, h5py, mpi4py, numba, pyyaml,
#    tifffile, pillow, pytest, pytest-timeout, attrs, httpx, anyio, h11, click,
#    typing-extensions, and cupy-cuda13x (REHEARSAL_CUPY=0 leaves CuPy out). CuPy cannot reach a
#    GPU here; it is there so that gpu.sh's GPU probe fails the way it would on a machine
#    whose driver or device is missing, not on a missing module.
# 2. It checks the carried packages are absent, then installs .whl/ offline the way gpu.sh
#    does (gpu_install.sh; .whl/ is made first by gpu_wheels.sh if it is missing).
# 3. The CPU test suite in that environment, as CI runs it: tests/unit, tests/faults, then
#    tests/mpi on 2 ranks through the carried MPICH.
# 4. gpu.sh itself, which must install, import, launch 2 MPI ranks and then stop with exit 3
#    and one line "gpu.sh: no GPU present (...)".
# 5. gpu.sh's dry run (PTYCHOMPI_GPU_DRY=1): every stage on the CPU at tiny sizes, the 2-rank
#    engine stage through the carried MPICH included; all must pass and leave 8 files.
# Exit 0 when all of that holds. CPU heavy (the whole unit suite): run it once, not in a loop.
#
#   bash benchmarks/gpu_rehearsal.sh          # logs in gpu-rehearsal/ (ignored: out-style)
set -uo pipefail
cd "$(dirname "$0")/.."
PY312=${PYTHON312:-$HOME/.pyenv/versions/3.12.1/bin/python}
command -v "$PY312" >/dev/null || PY312=$(command -v python3.12) \
    || { echo "gpu_rehearsal: no Python 3.12 (set PYTHON312)"; exit 2; }
VENV=.venv-gpu-rehearsal
LOGS=${REHEARSAL_OUT:-/tmp/gpu-rehearsal}
IMAGE_PACKAGES=(numpy scipy h5py mpi4py numba pyyaml tifffile pillow pytest pytest-timeout
                attrs httpx anyio h11 click typing-extensions)
# the browser test needs Chromium and Selenium, which the image lacks (CI runs it)
NOT_ON_IMAGE=(--ignore tests/unit/test_gui_browser.py)
[ "${REHEARSAL_CUPY:-1}" = 1 ] && IMAGE_PACKAGES+=(cupy-cuda13x)
mkdir -p "$LOGS"
FAIL=0
step() { echo; echo "=== rehearsal: $*"; }
fail() { echo "gpu_rehearsal: FAILED: $*"; FAIL=1; }

step "fresh $VENV from $PY312 with the image's packages: ${IMAGE_PACKAGES[*]}"
rm -rf "$VENV"
"$PY312" -m venv "$VENV" || { echo "gpu_rehearsal: venv failed"; exit 2; }
PY=$PWD/$VENV/bin/python
"$PY" -m pip install -q --disable-pip-version-check "${IMAGE_PACKAGES[@]}" \
    || { echo "gpu_rehearsal: installing the image's packages failed"; exit 2; }
"$PY" -c "import sys; print(sys.version)"

step "the carried packages are absent before the install"
for mod in hdf5plugin pyfftw pytest_mpi aiosmtpd starlette uvicorn ptychompi; do
    if (cd /tmp && "$PY" -c "import $mod" 2>/dev/null); then fail "$mod is already there"; fi
done
[ -e "$VENV/bin/mpiexec" ] && fail "an mpiexec is already there"

if ! compgen -G ".whl/*.whl" >/dev/null; then
    step "no .whl/: making it (registry needed here)"
    bash benchmarks/gpu_wheels.sh || { echo "gpu_rehearsal: gpu_wheels.sh failed"; exit 2; }
fi

step "offline install, as gpu.sh does it (no registry: PIP_INDEX_URL points nowhere)"
export PIP_INDEX_URL=http://127.0.0.1:9/ PIP_FIND_LINKS=""  # any network use would fail
. benchmarks/gpu_install.sh
gpu_install || { echo "gpu_rehearsal: offline install failed"; exit 1; }
gpu_mpi_check || fail "2 MPI ranks did not start"
unset PIP_INDEX_URL PIP_FIND_LINKS

step "unit tests on the CPU (log: $LOGS/unit.log)"
export PTYCHOMPI_DEVICE=cpu OMPI_MCA_rmaps_base_oversubscribe=1 PYTHONUNBUFFERED=1
"$PY" -m pytest -q -p no:cacheprovider -rfEs "${NOT_ON_IMAGE[@]}" tests/unit \
    > "$LOGS/unit.log" 2>&1 \
    || fail "unit tests (tail of $LOGS/unit.log below)"
tail -n 25 "$LOGS/unit.log"

step "fault injection (log: $LOGS/faults.log)"
timeout 600 "$PY" -m pytest -q -p no:cacheprovider tests/faults > "$LOGS/faults.log" 2>&1 \
    || fail "fault injection (tail of $LOGS/faults.log below)"
tail -n 3 "$LOGS/faults.log"

step "MPI tests on 2 ranks (log: $LOGS/mpi.log)"
timeout 900 mpiexec -n 2 "$PY" -m pytest -q --with-mpi -p no:cacheprovider tests/mpi \
    > "$LOGS/mpi.log" 2>&1 || fail "MPI tests (tail of $LOGS/mpi.log below)"
tail -n 8 "$LOGS/mpi.log"
unset PTYCHOMPI_DEVICE

step "gpu.sh up to the GPU (OUT=$LOGS/gpu-out)"
rm -rf "$LOGS/gpu-out"
PIP_INDEX_URL=http://127.0.0.1:9/ OUT="$LOGS/gpu-out" PYTHON="$PY" bash benchmarks/gpu.sh \
    > "$LOGS/gpu.log" 2>&1
rc=$?
cat "$LOGS/gpu.log"
[ "$rc" = 3 ] || fail "gpu.sh exited $rc, expected 3 (no GPU)"
[ "$(grep -c '^gpu.sh: no GPU present' "$LOGS/gpu.log")" = 1 ] \
    || fail "gpu.sh did not say 'gpu.sh: no GPU present' in one line"
grep -q $'^mpi\t0' "$LOGS/gpu-out/gpu_stages.tsv" || fail "gpu.sh's MPI stage failed"

step "gpu.sh's stages on the CPU (PTYCHOMPI_GPU_DRY=1, OUT=$LOGS/gpu-dry)"
rm -rf "$LOGS/gpu-dry"
PTYCHOMPI_GPU_DRY=1 PTYCHOMPI_GPU_SKIP_INSTALL=1 OUT="$LOGS/gpu-dry" PYTHON="$PY" \
    bash benchmarks/gpu.sh > "$LOGS/gpu-dry.log" 2>&1
rc=$?
sed -n '/^== done/,$p' "$LOGS/gpu-dry.log"
[ "$rc" = 0 ] || fail "gpu.sh's dry run exited $rc (log: $LOGS/gpu-dry.log)"
n=$(find "$LOGS/gpu-dry" -type f | wc -l)
[ "$n" = 8 ] || fail "gpu.sh's dry run left $n files, expected 8"

echo
[ "$FAIL" = 0 ] && echo "gpu_rehearsal: all steps passed" || echo "gpu_rehearsal: some steps FAILED"
exit "$FAIL"
