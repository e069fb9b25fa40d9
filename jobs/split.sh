#!/bin/bash
# POST script of the infer node, on the access point, in the run directory: one fit input
# per candidate under nodes/<ID>/. Arguments: the access point's Python, $RETURN of infer.
set -u
python=$1 infer_exit=$2
[ "$infer_exit" = 0 ] || { echo "infer failed (exit $infer_exit): no fit inputs" >&2; exit "$infer_exit"; }
exec "$python" -m lensjobs node split candidates.fits infer/priors.fits --out nodes
