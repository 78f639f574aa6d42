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


# Prometheus (prometheus-client's multiprocess mode): the workers write their counters to files in
# PROMETHEUS_MULTIPROC_DIR (default var/prometheus), read together by /metrics.
def on_starting(server):  # the master, once, before any worker: counters start at zero
    from predcache_site.metrics_dir import metrics_dir, wipe_dead

    wipe_dead(metrics_dir())


def child_exit(server, worker):  # the master, as each worker exits: its live gauges go with it
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)
