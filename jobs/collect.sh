#!/bin/bash
# POST script of a fits_<k> node, on the access point, in the run directory: file what the
# job sent back (nodes/<ID>/, results/<ID>.tar.gz, the batch's outcomes.tsv); the node
# succeeds only when every candidate of the batch has a result.
# Arguments: the access point's Python, k, $RETURN.
set -u
exec "$1" -m lensjobs.workflow.batches collect "$2" "$3"
