"""Gunicorn settings shared by the demo, the benchmarks and the container image."""

import os

bind = os.environ.get("GUNICORN_BIND", f"0.0.0.0:{os.environ.get('PORT', '8000')}")
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
worker_class = "gthread"  # threads keep client connections alive; the hit path releases the GIL on I/O
threads = int(os.environ.get("GUNICORN_THREADS", "4"))
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "120"))
keepalive = 5
accesslog = os.environ.get("GUNICORN_ACCESS_LOG") or None
control_socket_disable = True
