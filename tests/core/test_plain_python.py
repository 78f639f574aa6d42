"""caching.core and caching.backends import nothing from Django."""

from __future__ import annotations

import subprocess
import sys

from tests.support.processes import REPO


def test_core_and_backends_import_without_django():
    code = (
        "import sys\n"
        "import caching.core.readthrough, caching.core.stats\n"
        "import caching.core.memory_store, caching.core.redis_store\n"
        "import caching.backends.http, caching.backends.local\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('django', 'rest_framework'))\n"
        "assert not bad, bad\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_the_core_tests_run_without_django():
    """tests/core needs no Django: run without the Django plugin and the Django-side fixtures."""
    code = (
        "import sys, pytest\n"
        "status = pytest.main(['tests/core', '-q', '-p', 'no:django', '-p', 'no:cacheprovider',\n"
        "                      '--noconftest', '--ignore=tests/core/test_plain_python.py'])\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('django', 'rest_framework'))\n"
        "assert not bad, bad\n"
        "sys.exit(int(status))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert " passed" in result.stdout
