# Sourced by every lensjobs node wrapper: one thread per requested CPU, scratch inside the
# job's sandbox, and the Python that has lensjobs (a container's python3 by default).
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
export OPENBLAS_NUM_THREADS=$OMP_NUM_THREADS MKL_NUM_THREADS=$OMP_NUM_THREADS
mkdir -p .scratch
# numba (lenstronomy's) caches compiled code beside its modules, read-only in an image.
export TMPDIR=$PWD/.scratch MPLCONFIGDIR=$PWD/.scratch/matplotlib NUMBA_CACHE_DIR=$PWD/.scratch/numba
PYTHON=${LENSJOBS_PYTHON:-python3}

# DESIGN.md's exit codes: 0 done, 2 bad input (DAG RETRY ... UNLESS-EXIT 2), 85 checkpoint
# taken, anything else a fault worth retrying. A Python that cannot start or import lensjobs
# is a fault of this machine, never "bad input", so it must not come out as 2.
run_node() {
  "$PYTHON" -m lensjobs node "$@"
  local code=$?
  case $code in
    0 | 2 | 85) return $code ;;
    *) echo "lensjobs node $1 ended with exit code $code (a fault, not bad input)" >&2; return 1 ;;
  esac
}
