#!/bin/bash
# HTCondor fit_<ID> node: fit input.fits in the job's sandbox. The fit writes params.json,
# <ID>.txt, three PNGs, chain.npz and <ID>.tar.gz beside it; HTCondor brings them back to
# nodes/<ID>/ and the tarball to results/ (transfer_output_remaps in fit.sub).
# Arguments: ID PRESET CHECKPOINT_EVERY_SECONDS
set -u
id=$1 preset=$2 every=$3
# HTCondor puts the executable and common.sh (an input file) side by side in the sandbox.
source "$(dirname "$0")/common.sh"
run_node fit input.fits --out . --preset "$preset" --checkpoint-every "$every"
code=$?
rm -rf .scratch
echo "fit_$id exit $code" >&2
exit $code
