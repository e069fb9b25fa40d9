"""Candidate IDs become file and DAG node names: what a safe one looks like. Kept apart
(standard library only) so the access point's DAG scripts can check IDs without loading
the catalogue machinery."""

import re

SAFE_ID = re.compile(r"[A-Za-z0-9_-]{1,128}")
