"""The aggregate node: summary PNGs, the results catalogue, failed.txt, an HTML gallery,
manifests and a results tarball for a run directory (see :mod:`lensjobs.aggregate.node`)."""

from lensjobs.aggregate.node import AggregateReport, aggregate_run

__all__ = ["AggregateReport", "aggregate_run"]
