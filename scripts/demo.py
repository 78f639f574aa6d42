"""``make demo``: migrate, seed a demo model and API key, find or start Redis, serve with gunicorn.

Runs in the foreground until Ctrl-C, then stops what it started. Its files (database, model,
key, static files, embedded Redis) live in ``var/``, or in ``PREDCACHE_DEMO_DIR`` if set.
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from predcache_site.local_redis import (  # noqa: E402  (after the path tweak)
    DEFAULT_LOCAL_URL,
    RedisServer,
    free_port,
    redis_answers,
)

VAR = Path(os.environ.get("PREDCACHE_DEMO_DIR") or REPO / "var").resolve()
PYTHON = sys.executable
DEMO_KEY_FILE = VAR / "demo-api-key"
# The demo checks itself with one pair of instances and hands the user another, not yet cached.
CHECK_INSTANCES = '{"instances": [[5.0, 3.4, 1.5, 0.2], [6.3, 2.9, 5.6, 1.8]]}'
TRY_INSTANCES = '{"instances": [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]}'


def manage(*args: str, env: dict[str, str]) -> None:
    subprocess.run([PYTHON, "manage.py", *args], cwd=REPO, env=env, check=True)


def ensure_secret_key() -> None:
    """Keep a per-checkout secret key in .env (git-ignored), made on first run; settings read it."""
    if os.environ.get("DJANGO_SECRET_KEY"):
        return
    env_file = REPO / ".env"
    if env_file.exists() and "DJANGO_SECRET_KEY=" in env_file.read_text():
        return
    with env_file.open("a") as handle:
        handle.write(f"DJANGO_SECRET_KEY={secrets.token_urlsafe(48)}\n")


def choose_redis() -> tuple[str, RedisServer | None]:
    configured = os.environ.get("REDIS_URL")
    if configured:
        if not redis_answers(configured):
            sys.exit(f"REDIS_URL={configured} does not answer; unset it to use an embedded Redis")
        return configured, None
    if redis_answers(DEFAULT_LOCAL_URL):
        return DEFAULT_LOCAL_URL, None
    server = RedisServer(VAR / "redis").start()
    return server.url, server


def claim_port(port: int) -> socket.socket:
    """Bind the demo's port now and hand the socket to gunicorn, so what answers there is ours."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listener.bind(("127.0.0.1", port))
    except OSError:
        listener.close()
        sys.exit(f"port {port} is in use; rerun with PORT=<a free port>, e.g. PORT={free_port()} make demo")
    listener.listen(128)
    listener.set_inheritable(True)
    return listener


def demo_key(env: dict[str, str]) -> str:
    if DEMO_KEY_FILE.exists():
        key = DEMO_KEY_FILE.read_text().strip()
        check = "from rest_framework_api_key.models import APIKey; import sys; "
        check += f"sys.exit(0 if APIKey.objects.is_valid('{key}') else 1)"
        if subprocess.run([PYTHON, "manage.py", "shell", "-c", check], cwd=REPO, env=env).returncode == 0:
            return key
    created = subprocess.run(
        [PYTHON, "manage.py", "predcache", "keys", "create", "demo"],
        cwd=REPO,
        env=env,
        check=True,
        capture_output=True,  # the demo prints the key itself, below
        text=True,
    )
    key = created.stdout.strip().splitlines()[-1]
    DEMO_KEY_FILE.write_text(key + "\n")
    DEMO_KEY_FILE.chmod(0o600)
    return key


def ask(url: str, key: str, document: str) -> tuple[str, str]:
    request = urllib.request.Request(
        url,
        data=document.encode(),
        method="POST",
        headers={"Content-Type": "application/json", "Authorization": f"Api-Key {key}"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.headers["X-Cache"], response.read().decode()


def wait_for_gunicorn(process: subprocess.Popen[bytes], base: str, timeout: float = 60) -> None:
    """Until our gunicorn answers /readyz; exits at once (non-zero) if gunicorn stops first."""
    deadline = time.monotonic() + timeout
    while not _ready(base):
        if process.poll() is not None:
            sys.exit(
                f"gunicorn exited with status {process.returncode} before it was ready (its log is above)"
            )
        if time.monotonic() > deadline:
            sys.exit(f"gunicorn did not answer {base}/readyz within {timeout:.0f} s (its log is above)")


def main() -> None:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # stop children on SIGTERM as on Ctrl-C
    port_text = os.environ.get("PORT", "8000")
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        sys.exit(f"PORT={port_text} is not a TCP port number")
    port = int(port_text)
    listener = claim_port(port)  # first: a taken port must fail fast, before anything is set up
    VAR.mkdir(exist_ok=True)
    ensure_secret_key()
    redis_url, embedded = choose_redis()
    env = {**os.environ, "REDIS_URL": redis_url}
    if VAR != REPO / "var":  # everything the settings keep in var/ by default goes there too
        env.setdefault("DATABASE_URL", f"sqlite:///{VAR / 'predcache.sqlite3'}")
        env.setdefault("PREDCACHE_MODEL_DIR", str(VAR / "models"))
        env.setdefault("DJANGO_STATIC_ROOT", str(VAR / "static"))
    env.setdefault("DJANGO_ALLOWED_HOSTS", "localhost,127.0.0.1,[::1]")
    processes: list[subprocess.Popen[bytes]] = []
    try:
        manage("migrate", "--noinput", "-v0", env=env)
        manage("collectstatic", "--noinput", "-v0", env=env)
        model_file = VAR / "models" / "iris.joblib"
        if not model_file.exists():
            subprocess.run(
                [PYTHON, "scripts/train_demo_model.py", str(model_file)],
                cwd=REPO,
                check=True,
                stdout=subprocess.DEVNULL,
            )
        manage(
            "predcache",
            "models",
            "upsert",
            "iris",
            "--backend",
            "local",
            "--target",
            "iris.joblib",
            "--ttl",
            "3600",
            env=env,
        )
        key = demo_key(env)
        subprocess.run(
            [PYTHON, "manage.py", "predcache", "schedules", "install"],
            cwd=REPO,
            env=env,
            check=True,
            stdout=subprocess.DEVNULL,
        )
        gunicorn = [PYTHON, "-m", "gunicorn", "-c", "predcache_site/gunicorn_conf.py", "predcache_site.wsgi"]
        env.update(GUNICORN_BIND=f"fd://{listener.fileno()}", GUNICORN_ACCESS_LOG="-")
        processes.append(subprocess.Popen(gunicorn, cwd=REPO, env=env, pass_fds=(listener.fileno(),)))
        base = f"http://127.0.0.1:{port}"
        wait_for_gunicorn(processes[0], base)
        worker_log = VAR / "celery.log"
        processes.append(start_worker(env, worker_log))
        wait_for_worker(processes[1], worker_log)
        url = f"{base}/v1/models/iris:predict"
        # A fresh start: the instances below are not cached yet, so their first answer is a MISS.
        subprocess.run(
            [PYTHON, "manage.py", "predcache", "purge", "iris"],
            cwd=REPO,
            env=env,
            check=True,
            stdout=subprocess.DEVNULL,
        )
        try:
            first, second = ask(url, key, CHECK_INSTANCES), ask(url, key, CHECK_INSTANCES)
        except (urllib.error.URLError, OSError) as exc:
            sys.exit(f"the self-check request to {url} failed: {exc} (gunicorn's log is above)")
        print(
            f"""
predcache is running at {base}   (Redis: {redis_url}{" embedded" if embedded else ""})
  self-check, first request:  X-Cache: {first[0]}  {first[1]}
  self-check, second request: X-Cache: {second[0]}  {second[1]}

API key (kept in {DEMO_KEY_FILE}):
  {key}

Try it: run this twice. The first answer is computed by the model (X-Cache: MISS),
the second comes from Redis (X-Cache: HIT).
  curl -i -X POST {url} \\
    -H 'Authorization: Api-Key {key}' -H 'Content-Type: application/json' \\
    -d '{TRY_INSTANCES}'

Admin: {base}/admin/ (create a login: .venv/bin/python manage.py createsuperuser)
API docs: {base}/v1/docs     CLI: REDIS_URL={redis_url} .venv/bin/python manage.py predcache stats
Celery: a worker with beat (warming, refresh-ahead, scheduled purges), its log in {worker_log}
  schedules: REDIS_URL={redis_url} .venv/bin/python manage.py predcache schedules list
Press Ctrl-C to stop.
""",
            flush=True,
        )
        stopped = wait_for_one_to_stop(processes)
        name = "gunicorn" if stopped is processes[0] else f"the Celery worker (see {worker_log})"
        sys.exit(f"{name} stopped with status {stopped.returncode}; stopping the demo")
    except KeyboardInterrupt:
        pass
    finally:
        for process in processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in processes:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        listener.close()
        if embedded is not None:
            embedded.stop()


def start_worker(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """A Celery worker with an embedded beat (one process is enough on one machine), logging to ``log``."""
    command = [PYTHON, "-m", "celery", "-A", "predcache_site", "worker", "--beat", "--concurrency", "2"]
    command += ["--loglevel", "INFO", "--schedule", str(VAR / "celerybeat-schedule")]
    with log.open("ab") as output:
        return subprocess.Popen(command, cwd=REPO, env=env, stdout=output, stderr=subprocess.STDOUT)


def wait_for_worker(process: subprocess.Popen[bytes], log: Path, timeout: float = 60) -> None:
    """Until the worker says it is ready; exits at once (non-zero) if it stops first."""
    start = log.stat().st_size  # the log is appended to across runs: read this run's part
    deadline = time.monotonic() + timeout
    while True:
        with log.open("rb") as handle:
            handle.seek(start)
            if b" ready." in handle.read():
                return
        if process.poll() is not None:
            sys.exit(f"the Celery worker exited with status {process.returncode} (see {log})")
        if time.monotonic() > deadline:
            sys.exit(f"the Celery worker was not ready within {timeout:.0f} s (see {log})")
        time.sleep(0.2)


def wait_for_one_to_stop(processes: list[subprocess.Popen[bytes]]) -> subprocess.Popen[bytes]:
    """Block until one of the demo's processes exits (Ctrl-C and SIGTERM end the wait too)."""
    while True:
        for process in processes:
            if process.poll() is not None:
                return process
        time.sleep(0.5)


def _ready(base: str) -> bool:
    try:
        with urllib.request.urlopen(f"{base}/readyz", timeout=1) as response:
            return response.status == 200
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        time.sleep(0.1)
        return False


if __name__ == "__main__":
    main()
