#!/bin/bash
# FINAL node: summary PNGs, results catalogue, gallery and tarballs from whatever the fits
# produced. Runs even when fits failed. Argument: the run directory.
set -u
# HTCondor puts the executable and common.sh (an input file) side by side in the sandbox.
source "$(dirname "$0")/common.sh"
run_node aggregate "$1"
code=$?
rm -rf .scratch
exit $code
