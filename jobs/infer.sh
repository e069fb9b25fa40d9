#!/bin/bash
# HTCondor infer node: both networks over the catalogue, writing priors.fits in the sandbox.
# Argument: the catalogue's file name in the sandbox (it keeps its OSDF name there).
set -u
# HTCondor puts the executable and common.sh (an input file) side by side in the sandbox.
source "$(dirname "$0")/common.sh"
# Inference may use every CPU it asked for (batched convolutions).
export OMP_NUM_THREADS=${_CONDOR_NPROCS:-${OMP_NUM_THREADS}}
run_node infer "$1" --out .
code=$?
rm -rf .scratch
exit $code
