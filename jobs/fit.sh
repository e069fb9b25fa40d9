#!/bin/bash
# HTCondor fits_<k> node: fit the batch's inputs in/<ID>.fits one after another into
# out/<ID>/ (params.json, <ID>.txt, PNGs, posterior.npz, <ID>.tar.gz). out/ is the job's
# checkpoint and its output; the POST script (jobs/collect.sh) files it in the run.
# Arguments: BATCH PRESET CHECKPOINT_EVERY_SECONDS
set -u
batch=$1 preset=$2 every=$3
# HTCondor puts the executable and common.sh (an input file) side by side in the sandbox.
source "$(dirname "$0")/common.sh"
run_node fit in --out out --preset "$preset" --checkpoint-every "$every"
code=$?
rm -rf .scratch
echo "fits_$batch exit $code" >&2
exit $code
