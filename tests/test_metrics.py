"""/metrics in process: open by default, the token when set, what the Celery side's warms add."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.test import Client

from tests.support.metrics import Samples, samples, value

pytestmark = pytest.mark.django_db


def scrape(**headers: str) -> Samples:
    response = Client().get("/metrics", headers=headers)
    assert response.status_code == 200
    return samples(response.content)


def test_metrics_are_open_when_no_token_is_set(api: Any, http_model: Any, settings: Any) -> None:
    settings.PREDCACHE_METRICS_TOKEN = ""
    before = scrape()
    assert api.predict("echo", {"instances": [[1], [2]]})["X-Cache"] == "MISS"
    after = scrape()
    assert (
        value(after, "predcache_requests_total", model="echo")
        - value(before, "predcache_requests_total", model="echo")
        == 1
    )
    assert (
        value(after, "predcache_instances_total", model="echo", result="miss")
        - value(before, "predcache_instances_total", model="echo", result="miss")
        == 2
    )


def test_the_token_when_set(settings: Any) -> None:
    settings.PREDCACHE_METRICS_TOKEN = "s3cret"
    refused = Client().get("/metrics", headers={"Authorization": "Bearer s3cre"})
    assert refused.status_code == 401
    assert refused.json()["error"]["code"] == "not_authenticated"
    assert scrape(Authorization="Bearer s3cret")  # answered


def test_a_warm_run_counts_the_run_and_the_instances_it_warmed(
    backend: Any, http_model: Any, tmp_path: Any
) -> None:
    instances = tmp_path / "instances.jsonl"
    instances.write_text("".join(f"[{i}]\n" for i in range(7)))
    before = scrape()
    call_command("predcache", "warm", "echo", "--file", str(instances))
    after = scrape()
    labels = {"model": "echo", "status": "finished"}
    assert (
        value(after, "predcache_warm_runs_total", **labels)
        - value(before, "predcache_warm_runs_total", **labels)
        == 1
    )
    assert (
        value(after, "predcache_warmed_instances_total", model="echo")
        - value(before, "predcache_warmed_instances_total", model="echo")
        == 7
    )
    # A warm is no client's request: it is not counted as requests or misses.
    assert value(after, "predcache_requests_total", model="echo") == value(
        before, "predcache_requests_total", model="echo"
    )


_KILLED_WITH_AN_OPEN_BREAKER = """
import os
from prometheus_client import Gauge
Gauge("predcache_redis_breaker_state", "", multiprocess_mode="livemax", registry=None).set(2)
print(os.getpid())
"""


def test_a_process_gone_without_saying_so_leaves_no_breaker_state() -> None:
    directory = os.environ["PROMETHEUS_MULTIPROC_DIR"]
    gone = subprocess.run(  # exits without mark_process_dead, as a killed worker or a CLI run does
        [sys.executable, "-c", _KILLED_WITH_AN_OPEN_BREAKER],
        env={"PROMETHEUS_MULTIPROC_DIR": directory, "PATH": ""},
        check=True,
        capture_output=True,
        text=True,
    )
    left = Path(directory) / f"gauge_livemax_{gone.stdout.strip()}.db"
    assert left.exists()
    assert value(scrape(), "predcache_redis_breaker_state") < 2
    assert not left.exists()
