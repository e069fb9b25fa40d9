#!/bin/bash
# PRE script of a fits_<k> node, on the access point, in the run directory: stage the
# inputs of the batch's candidates that have no result yet; exit 3 (PRE_SKIP) when none.
# Arguments: the access point's Python, k.
set -u
exec "$1" -m lensjobs.workflow.batches stage "$2"
