"""Where this host's processes keep their Prometheus counters (prometheus-client's multiprocess mode).

Plain Python, no Django: gunicorn's config (the master) and the settings (every process) both
read it, and it must run before anything imports prometheus_client, which picks its value
storage once, at import, from ``PROMETHEUS_MULTIPROC_DIR``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

DEFAULT = Path(__file__).resolve().parent.parent / "var" / "prometheus"
_FILE = re.compile(r"^[a-z_]+_(\d+)\.db$")  # prometheus_client's "<type>[_<mode>]_<pid>.db"


def metrics_dir() -> Path:
    """``PROMETHEUS_MULTIPROC_DIR``, set to the default under ``var/`` when unset, and created."""
    path = Path(os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", str(DEFAULT)))
    path.mkdir(parents=True, exist_ok=True)
    return path


def wipe_dead(path: Path) -> list[Path]:
    """Delete the files of processes no longer running (a previous run's); returns what was deleted.

    At a server's start: its counters begin at zero, as Prometheus expects after a restart. Files
    of live processes stay, so a Celery worker sharing the directory keeps counting.
    """
    removed = []
    for file in path.iterdir():
        match = _FILE.match(file.name)
        if match and not _alive(int(match.group(1))):
            file.unlink(missing_ok=True)
            removed.append(file)
    return removed


def forget_dead_live_gauges(path: Path) -> None:
    """Delete the live gauges (breaker states) of processes gone without saying so (killed, or a
    command-line run): else their last state stays in /metrics until the next server start."""
    for file in path.glob("gauge_live*.db"):
        match = _FILE.match(file.name)
        if match and not _alive(int(match.group(1))):
            file.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True
