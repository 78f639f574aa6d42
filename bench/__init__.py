"""Benchmarks: each starts the servers it measures (see the Makefile's ``bench`` target)."""

import os
import tempfile

# The servers a benchmark starts keep their Prometheus files in a directory of their own: in the
# demo's (var/prometheus) they would be added to its /metrics, and their start would wipe its
# dead processes' files.
os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", tempfile.mkdtemp(prefix="predcache-bench-metrics-"))
