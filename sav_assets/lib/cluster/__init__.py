"""Generic fan-out of whole work units: in-process, or as Ray tasks on a cluster (runner.py)."""
