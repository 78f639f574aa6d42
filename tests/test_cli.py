"""The operator CLI: ``manage.py predcache ...`` as scripts call it."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from django.core.management import CommandError, call_command

from caching.models import CachePolicy, ModelEndpoint
from caching.runtime import get_runtime
from tests.support.processes import REPO

pytestmark = pytest.mark.django_db


def run(*args, capsys):
    call_command("predcache", *args)
    return capsys.readouterr()


def test_models_upsert_is_idempotent(backend, capsys):
    args = ("models", "upsert", "m1", "--backend", "http", "--target", backend.predict_url, "--ttl", "120")
    assert "created model m1" in run(*args, capsys=capsys).out
    assert "updated model m1" in run(*args, capsys=capsys).out
    assert ModelEndpoint.objects.count() == 1
    assert CachePolicy.objects.get().ttl_seconds == 120

    run(
        "models",
        "upsert",
        "m1",
        "--backend",
        "http",
        "--target",
        backend.predict_url,
        "--timeout",
        "3",
        capsys=capsys,
    )
    model = ModelEndpoint.objects.get()
    assert model.timeout_seconds == 3
    assert model.policy.ttl_seconds == 120  # flags left out keep their value


@pytest.mark.parametrize(
    "args,message",
    [
        (("bad name!", "--backend", "http", "--target", "http://x/p"), "name"),
        (("m", "--backend", "http", "--target", "ftp://x"), "target"),
        (("m", "--backend", "local", "--target", "../../etc/passwd"), "outside the model directory"),
        (("m", "--backend", "http", "--target", "http://x/p", "--ttl", "0"), "ttl_seconds"),
    ],
)
def test_models_upsert_rejects_bad_settings(args, message):
    with pytest.raises(CommandError, match=message):
        call_command("predcache", "models", "upsert", *args)
    assert ModelEndpoint.objects.count() == 0


def test_models_list(http_model, capsys):
    out = run("models", "list", capsys=capsys).out
    assert out.startswith("echo\thttp\t")
    assert "ttl=300" in out


def test_keys_create_prints_a_working_key_last(http_model, backend, capsys, client):
    key = run("keys", "create", "ci", capsys=capsys).out.strip().splitlines()[-1]
    response = client.post(
        "/v1/models/echo:predict",
        data=b'{"instances": [1]}',
        content_type="application/json",
        headers={"X-Api-Key": key},
    )
    assert response.status_code == 200


def test_purge_unknown_model_fails():
    with pytest.raises(CommandError, match="no model"):
        call_command("predcache", "purge", "missing")


def test_warm_then_requests_hit(api, backend, http_model, tmp_path, capsys):
    warm_file = tmp_path / "warm.jsonl"
    warm_file.write_text("[1]\n[2]\n\n[1]\n")
    out = run("warm", "echo", "--file", str(warm_file), capsys=capsys).out
    assert "instances=3" in out and "computed=3" in out

    response = api.predict("echo", {"instances": [[2], [1]]})
    assert response["X-Cache"] == "HIT"
    assert len(backend.calls()) == 1


def test_warm_reports_bad_lines(http_model, tmp_path):
    warm_file = tmp_path / "warm.jsonl"
    warm_file.write_text("[1]\n{oops\n")
    with pytest.raises(CommandError, match=r"warm\.jsonl:2"):
        call_command("predcache", "warm", "echo", "--file", str(warm_file))


def test_stats_counts_hits_and_misses(api, backend, http_model, capsys):
    api.predict("echo", {"instances": [[1], [2]]})
    api.predict("echo", {"instances": [[1], [3]]})
    runtime = get_runtime()
    runtime.stats.flush(runtime.client, runtime.keyspace)

    stats = json.loads(run("stats", "echo", "--json", capsys=capsys).out)
    assert stats["requests"] == 2
    assert (stats["hits"], stats["misses"]) == (1, 3)
    assert stats["backend_calls"] == 2
    assert stats["hit_ratio"] == 0.25


def test_cli_entry_point_runs_as_a_process(tmp_path):
    """The real ``manage.py`` process, as scripts call it (its own SQLite file)."""
    env = {
        "DATABASE_URL": f"sqlite:///{tmp_path / 'cli.sqlite3'}",
        "DJANGO_SECRET_KEY": "x",
        "PATH": "/usr/bin:/bin",
    }
    manage = [sys.executable, "manage.py"]
    subprocess.run([*manage, "migrate", "-v0"], check=True, env=env, cwd=REPO)
    result = subprocess.run(
        [*manage, "predcache", "keys", "create", "script"],
        check=True,
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    key = result.stdout.strip().splitlines()[-1]
    prefix, _, secret = key.partition(".")
    assert len(prefix) == 8 and len(secret) == 32


def test_upsert_sets_backend_options(local_model, iris_model_file):
    args = ("predcache", "models", "upsert", "iris", "--backend", "local", "--target", iris_model_file.name)
    call_command(*args, "--options", '{"method": "predict_proba"}')
    assert ModelEndpoint.objects.get(name="iris").options == {"method": "predict_proba"}

    for bad in ("[1]", "{not json", '{"batch": 4}'):
        with pytest.raises(CommandError):
            call_command(*args, "--options", bad)
    assert ModelEndpoint.objects.get(name="iris").options == {"method": "predict_proba"}


def test_upsert_sets_every_policy_flag(db, capsys):
    base = ("predcache", "models", "upsert", "p", "--backend", "http", "--target", "http://127.0.0.1:9/p")
    call_command(
        *base,
        "--ttl", "120", "--jitter", "0.2", "--stale-while-revalidate", "30", "--stale-if-error", "600",
        "--mode", "bypass", "--round", "3sig", "--ignore-field", "request_id", "--ignore-field", "meta.trace",
        "--admit-after", "2", "--max-entry-bytes", "5000",
    )  # fmt: skip
    policy = CachePolicy.objects.get(model__name="p")
    assert (policy.ttl_seconds, policy.ttl_jitter, policy.mode) == (120, 0.2, "bypass")
    assert (policy.stale_while_revalidate_seconds, policy.stale_if_error_seconds) == (30, 600)
    assert (policy.round_decimals, policy.round_significant) == (None, 3)
    assert policy.ignore_fields == ["request_id", "meta.trace"]
    assert (policy.admit_after, policy.max_entry_bytes) == (2, 5000)

    call_command(*base, "--round", "2")
    policy.refresh_from_db()
    assert (policy.round_decimals, policy.round_significant, policy.ttl_seconds) == (2, None, 120)
    call_command(*base, "--round", "off", "--cache")
    policy.refresh_from_db()
    assert (policy.round_decimals, policy.round_significant, policy.mode) == (None, None, "cache")


@pytest.mark.parametrize(
    "flags",
    [("--jitter", "0.9"), ("--admit-after", "0"), ("--round", "x"), ("--mode", "sometimes"), ("--ttl", "0")],
)
def test_invalid_policy_flags_are_refused_and_change_nothing(db, flags):
    base = ("predcache", "models", "upsert", "p", "--backend", "http", "--target", "http://127.0.0.1:9/p")
    call_command(*base, "--ttl", "120")
    with pytest.raises(CommandError):
        call_command(*base, *flags)
    assert CachePolicy.objects.get(model__name="p").ttl_seconds == 120
