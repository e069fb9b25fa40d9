#!/bin/bash
# POST script of the FINAL node. DAGMan takes the FINAL node's result as the DAG's result,
# so fail it when fit nodes failed: the DAG then ends failed and writes the rescue DAG that
# `lensjobs resubmit` uses. Arguments: $RETURN $FAILED_COUNT
set -u
[ "$1" = 0 ] || { echo "aggregate failed (exit $1)" >&2; exit 1; }
[ "$2" = 0 ] || { echo "$2 node(s) failed; see 'lensjobs status'" >&2; exit 1; }
