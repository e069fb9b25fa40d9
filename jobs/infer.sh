#!/bin/bash
# HTCondor infer node: both networks over candidates.fits, writing priors.fits in the sandbox.
set -u
# HTCondor puts the executable and common.sh (an input file) side by side in the sandbox.
source "$(dirname "$0")/common.sh"
# Inference may use every CPU it asked for (batched convolutions).
export OMP_NUM_THREADS=${_CONDOR_NPROCS:-${OMP_NUM_THREADS}}
run_node infer candidates.fits --out .
code=$?
rm -rf .scratch
exit $code
