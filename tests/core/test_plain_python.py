"""caching.core and caching.backends import nothing from Django."""

from __future__ import annotations

import subprocess
import sys

from tests.support.processes import REPO


def test_core_and_backends_import_without_django():
    code = (
        "import sys\n"
        "import caching.core.readthrough, caching.core.stats, caching.backends.http, caching.backends.local\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('django', 'rest_framework'))\n"
        "assert not bad, bad\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
