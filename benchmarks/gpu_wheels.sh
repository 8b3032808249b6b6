#!/usr/bin/env bash
# Download, here (with a package registry), the wheels the GPU machine's image lacks, for
# CPython 3.12 on manylinux x86-64, into the ignored folder .whl/ (carried with the GPU check:
# the machine has no network). The image already has numpy, scipy, h5py, mpi4py, numba,
# pyyaml, tifffile, pillow, pytest and cupy-cuda13x; it lacks:
#   hdf5plugin   HDF5 LZ4/bitshuffle/zstd/Blosc filters (trimmed to those: 44 -> 8 MiB)
#   pyFFTW       FFTW for the CPU FFTs (the CPU paths the unit suite compares against)
#   pytest-mpi   the MPI test suite's plugin
#   aiosmtpd, atpublic   the local mail server of the notification tests (attrs is there)
#   mpich        an MPI library and launcher (mpiexec) for the 2-rank run
#   starlette, uvicorn   the web GUI's extra (its API tests; httpx, anyio, h11, click are there)
# and, used only where needed:
#   .whl/fallback/mpi4py   when the image's mpi4py cannot load the carried MPICH
#   .whl/build/setuptools, wheel   to build ptychompi itself offline (build isolation)
# Versions are the ones the CPU test suite passes with here. Total well under the 64 MiB the
# working tree may carry.
#
#   bash benchmarks/gpu_wheels.sh        # from the repository root; prints the sizes
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
DEST=${PTYCHOMPI_WHEELS:-.whl}

WHEELS=(hdf5plugin==7.1.0 pyFFTW==0.15.1 pytest-mpi==0.6 aiosmtpd==1.4.6 atpublic==9.0.0
        mpich==5.0.2 starlette==1.10.0 uvicorn==0.55.0)
FALLBACK=(mpi4py==4.1.2)
BUILD=(setuptools==84.2.1 wheel==0.48.0)
PLATFORMS=()
for tag in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_24_x86_64 \
           manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64; do
    PLATFORMS+=(--platform "$tag")
done

fetch() {  # fetch DIR SPEC...: exactly these wheels, no dependencies, binary only
    local dir=$1; shift
    mkdir -p "$dir"
    "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
        --implementation cp "${PLATFORMS[@]}" -d "$dir" "$@"
}

rm -rf "$DEST"
fetch "$DEST" "${WHEELS[@]}"
fetch "$DEST/fallback" "${FALLBACK[@]}"
fetch "$DEST/build" "${BUILD[@]}"
"$PY" benchmarks/wheel_trim.py "$DEST"/hdf5plugin-*.whl

n=$(find "$DEST" -type f -name '*.whl' | wc -l)
expected=$(( ${#WHEELS[@]} + ${#FALLBACK[@]} + ${#BUILD[@]} ))
[ "$n" -eq "$expected" ] || { echo "gpu_wheels: expected $expected wheels, got $n" >&2; exit 1; }
du -ah "$DEST" | sort -k2
total=$(du -sb "$DEST" | cut -f1)
echo "gpu_wheels: $n wheels, $(( total / 1048576 )) MiB in $DEST"
[ "$total" -lt $(( 56 * 1048576 )) ] || { echo "gpu_wheels: over 56 MiB" >&2; exit 1; }
