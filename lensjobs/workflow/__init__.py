"""The workflow: run directories and settings (``run``), job images (``images``), fit batches
and their PRE/POST scripts (``batches``), writing a run's DAG and submit files (``write``),
reading DAGs, submit files and DAGMan's status files back (``read``), the schedd
(``condor``), the ``--local`` executor (``local``), starting and resubmitting
(``submission``), ``status`` and ``pull``. It orchestrates the node commands and never does
science; the science modules never import it."""
