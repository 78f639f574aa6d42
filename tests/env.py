"""Loaded with ``-p tests.env`` before Django settings are read: test-only environment defaults."""

import os
import tempfile

os.environ.setdefault("DJANGO_SECRET_KEY", "test-only-secret-key")
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "predcache_site.settings")
# Stats are flushed explicitly by the tests that read them, so no thread adds Redis commands.
os.environ.setdefault("PREDCACHE_STATS_FLUSH_SECONDS", "0")
# Keys' last uses are written only in the tests that read them: a background write would make
# a test's own SQLite transaction that read before it fail ("database is locked", WAL mode).
os.environ.setdefault("PREDCACHE_API_KEY_LAST_USED_SECONDS", "0")
# One installation id for the test process and the servers it starts: the test database is
# flushed between transactional tests, which deletes the row the migrations made.
os.environ.setdefault("PREDCACHE_INSTALLATION_ID", "tests")
# Background work runs on this process's threads, as where no worker runs; tests of the Celery
# side start a real worker and switch it on (tests/conftest.py, on_worker).
os.environ.setdefault("PREDCACHE_BACKGROUND_IN_WORKERS", "false")
# The test process's own metrics files, apart from var/prometheus (a server there may be running).
os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", tempfile.mkdtemp(prefix="predcache-test-metrics-"))
