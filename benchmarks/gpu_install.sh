# Offline install for the GPU check (sourced by gpu.sh and gpu_rehearsal.sh; never uses the
# network): the wheels carried in .whl/ (benchmarks/gpu_wheels.sh) and ptychompi itself, each
# without dependencies, into the environment of the Python that runs the check ($PY: on the GPU
# machine the image's python3, itself a virtualenv), so that its scripts (ptychompi, mpiexec)
# lie beside that interpreter as the tests expect. PATH gets that bin folder first and
# MPI4PY_LIBMPI names the carried MPICH.
#
#   PY=python3; . benchmarks/gpu_install.sh; gpu_install || exit 4
#   gpu_mpi_check    # 2 ranks through the carried MPICH; falls back to the carried mpi4py
#
# Settings: PTYCHOMPI_WHEELS (default .whl).

_gpu_pip() {  # offline pip install, no dependencies, over whatever the image has
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
        --ignore-installed --disable-pip-version-check "$@"
}

_gpu_site() {  # the site-packages folder pip --prefix made under $1
    find "$1" -maxdepth 4 -type d -name site-packages | head -n 1
}

gpu_install() {
    local wheels=${PTYCHOMPI_WHEELS:-.whl} prefix build
    if ! compgen -G "$wheels/*.whl" >/dev/null || ! compgen -G "$wheels/build/*.whl" >/dev/null
    then
        echo "gpu_install: no wheels in $wheels/ (carry it; make it where a registry is" \
             "reachable with: bash benchmarks/gpu_wheels.sh)"
        return 1
    fi
    prefix=$("$PY" -c "import sys; print(sys.prefix)") \
        || { echo "gpu_install: $PY does not run"; return 1; }
    [ -w "$prefix" ] || { echo "gpu_install: $prefix (the environment of $PY) is not" \
                               "writable"; return 1; }
    build=$(mktemp -d)
    _gpu_pip --prefix "$prefix" "$wheels"/*.whl \
        || { echo "gpu_install: installing the carried wheels into $prefix failed"; return 1; }
    _gpu_pip --prefix "$build" "$wheels"/build/*.whl \
        || { echo "gpu_install: installing the build tools failed"; return 1; }
    # ptychompi itself: built with the carried setuptools, no isolation, no dependencies
    PYTHONPATH="$(_gpu_site "$build")" _gpu_pip --no-build-isolation --prefix "$prefix" . \
        || { echo "gpu_install: building ptychompi offline failed"; return 1; }
    rm -rf "$build"
    export PATH="$prefix/bin:$PATH"
    export MPI4PY_LIBMPI="$prefix/lib/libmpi.so.12"  # the carried MPICH, not another MPI
    GPU_PREFIX=$prefix
    echo "gpu_install: $(find "$wheels" -maxdepth 1 -name '*.whl' | wc -l) wheels and" \
         "ptychompi installed offline into $prefix"
}

_gpu_mpi_try() {
    timeout 60 mpiexec -n 2 "$PY" -c "from mpi4py import MPI; c = MPI.COMM_WORLD; \
assert c.allreduce(1) == 2; print('mpi ok:', MPI.Get_library_version().splitlines()[0]) \
if c.rank == 0 else None" 2>&1
}

gpu_mpi_check() {  # 0 when 2 ranks start and reduce; else one line saying what failed
    local wheels=${PTYCHOMPI_WHEELS:-.whl} out
    command -v mpiexec >/dev/null || { echo "gpu_mpi_check: no mpiexec"; return 1; }
    if out=$(_gpu_mpi_try); then echo "$out"; return 0; fi
    if out=$(HYDRA_LAUNCHER=fork _gpu_mpi_try); then  # no ssh or name lookup for localhost
        export HYDRA_LAUNCHER=fork
        echo "$out (HYDRA_LAUNCHER=fork)"; return 0
    fi
    echo "gpu_mpi_check: the image's mpi4py failed with the carried MPICH:" \
         "$(echo "$out" | tail -n 1); trying the carried mpi4py"
    compgen -G "$wheels/fallback/mpi4py-*.whl" >/dev/null \
        || { echo "gpu_mpi_check: no carried mpi4py"; return 1; }
    _gpu_pip --prefix "$GPU_PREFIX" "$wheels"/fallback/mpi4py-*.whl \
        || { echo "gpu_mpi_check: installing the carried mpi4py failed"; return 1; }
    if out=$(_gpu_mpi_try); then echo "$out (carried mpi4py)"; return 0; fi
    echo "gpu_mpi_check: no working MPI launcher: $(echo "$out" | tail -n 1)"
    return 1
}
