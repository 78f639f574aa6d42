"""A real Celery worker (and beat) for tests: `celery -A predcache_site worker` on the test database."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings

from tests.support.processes import REPO, wait_until


@dataclass(frozen=True)
class Broker:
    """Where the tests' tasks travel: a URL, a key prefix (Redis) and a queue of this test run's own."""

    url: str
    key_prefix: str
    queue: str

    def environment(self) -> dict[str, str]:
        return {
            "CELERY_BROKER_URL": self.url,
            "PREDCACHE_CELERY_KEY_PREFIX": self.key_prefix,
            "PREDCACHE_CELERY_QUEUE": self.queue,
        }


def use_broker(broker: Broker) -> None:
    """Point this process's Celery app (what the tests and the code under test send with) at ``broker``."""
    from predcache_site.celery import app

    app.finalize()  # first: finalizing sets the installation's queue, which would replace the tests'
    app.conf.broker_url = broker.url
    options = dict(app.conf.broker_transport_options or {})
    options.pop("global_keyprefix", None)
    if broker.key_prefix:
        options["global_keyprefix"] = broker.key_prefix
    app.conf.broker_transport_options = options
    app.conf.task_default_queue = broker.queue
    app.close()  # drops connections made with the old settings; new ones use the new
    # ...but the producers made on them are kept apart, and would keep sending to the old broker.
    app.amqp._producer_pool = None


def new_queue() -> str:
    return f"predcache-test-{uuid.uuid4().hex[:8]}"


@dataclass
class Worker:
    """Test-side handle on a running worker process."""

    process: subprocess.Popen[bytes]
    log: Path
    key_prefix: str = ""  # the PREDCACHE_KEY_PREFIX it runs with

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def kill(self) -> None:
        """SIGKILL the whole worker (main process and pool children), as an OOM killer would."""
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)


@contextmanager
def celery_worker(
    workdir: Path,
    *,
    environment: Mapping[str, str],
    concurrency: int = 2,
    beat: bool = False,
    arguments: Sequence[str] = (),
    startup_timeout: float = 60,
) -> Iterator[Worker]:
    """Run a prefork worker (with ``beat``: and an embedded beat, DatabaseScheduler) until the block ends."""
    workdir.mkdir(parents=True, exist_ok=True)
    log = workdir / "worker.log"
    env = {
        **os.environ,
        "DJANGO_SECRET_KEY": settings.SECRET_KEY,
        "PYTHONPATH": str(REPO),
        "PREDCACHE_BACKGROUND_IN_WORKERS": "true",
        **environment,
    }
    command = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "predcache_site",
        "worker",
        "--pool",
        "prefork",
        "--concurrency",
        str(concurrency),
        "--loglevel",
        "INFO",
        "--without-mingle",
        "--without-gossip",
        "--hostname",
        f"test-{uuid.uuid4().hex[:6]}@%h",
        *(["--beat", "--schedule", str(workdir / "beat-schedule")] if beat else []),
        *arguments,
    ]
    with log.open("wb") as output:
        process = subprocess.Popen(
            command, cwd=REPO, env=env, stdout=output, stderr=subprocess.STDOUT, start_new_session=True
        )
    worker = Worker(process, log)

    def ready() -> bool:
        if process.poll() is not None:
            raise RuntimeError(
                f"the Celery worker exited with {process.returncode}:\n{worker.log_text()[-3000:]}"
            )
        return " ready." in worker.log_text()

    try:
        wait_until(ready, timeout=startup_timeout, what="the Celery worker")
        yield worker
    finally:
        if process.poll() is None:
            # A warm shutdown: to the main process only, which lets its children finish their
            # tasks (a signal to the whole group would kill them, and requeue their tasks).
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)  # any child left behind
