"""The operator CLI: ``manage.py predcache ...`` as scripts call it."""

from __future__ import annotations

import json
import re
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


def test_keys_create_with_models_rate_and_expiry(http_model, backend, capsys, client):
    from datetime import timedelta

    from django.utils import timezone
    from rest_framework_api_key.models import APIKey

    args = ("keys", "create", "team", "--models", "echo", "--rate", "10/s", "--expires-days", "30")
    key = run(*args, capsys=capsys).out.strip().splitlines()[-1]
    api_key = APIKey.objects.get(name="team")
    assert abs(api_key.expiry_date - (timezone.now() + timedelta(days=30))) < timedelta(minutes=1)
    grant = api_key.grant
    assert (grant.model_names, grant.rate_limit, grant.rate_period_seconds) == (["echo"], 10, 1)
    assert not grant.may_administer

    def predict(model):
        return client.post(
            f"/v1/models/{model}:predict",
            data=b'{"instances": [1]}',
            content_type="application/json",
            headers={"X-Api-Key": key},
        )

    assert predict("echo").status_code == 200
    assert predict("iris").status_code == 403


def test_keys_create_names_the_models_that_are_not_registered(http_model):
    from rest_framework_api_key.models import APIKey

    with pytest.raises(CommandError, match="no model is registered as 'ghost', 'phantom'"):
        call_command("predcache", "keys", "create", "team", "--models", "echo,phantom,ghost")
    assert not APIKey.objects.exists()


@pytest.mark.parametrize(
    "args,message",
    [
        (("--rate", "10/h"), "--rate: '10/h' is not a rate: use N/s or N/m"),
        (("--rate", "0/s"), "is not a rate"),
        (("--expires-days", "0"), "--expires-days: a whole number of days from 1 to 36500"),
        (("--models", ","), "--models: name at least one model"),
    ],
)
def test_keys_create_refuses_bad_limits(args, message):
    with pytest.raises(CommandError, match=re.escape(message)):
        call_command("predcache", "keys", "create", "team", *args)


def test_keys_list_shows_every_key_its_limits_and_state(http_model, capsys):
    run("keys", "create", "plain", capsys=capsys)
    run("keys", "create", "team", "--models", "echo", "--rate", "5/m", "--admin", capsys=capsys)
    revoked = run("keys", "create", "old", capsys=capsys).out.strip().split(".")[0]
    run("keys", "revoke", revoked, capsys=capsys)

    lines = run("keys", "list", capsys=capsys).out.splitlines()
    assert lines[0].split() == [
        "PREFIX", "LABEL", "STATE", "MODELS", "RATE", "ADMIN", "EXPIRES", "LAST", "USED", "CREATED"
    ]  # fmt: skip
    rows = {line.split()[1]: line.split()[2:6] for line in lines[1:]}
    assert rows == {
        "plain": ["active", "all", "-", "no"],
        "team": ["active", "echo", "5/m", "yes"],
        "old": ["revoked", "all", "-", "no"],
    }


def test_keys_revoke_stops_a_key_by_its_prefix(http_model, capsys, client):
    key = run("keys", "create", "leaked", capsys=capsys).out.strip().splitlines()[-1]
    prefix = key.split(".")[0]

    def status():
        return client.post(
            "/v1/models/echo:predict",
            data=b'{"instances": [1]}',
            content_type="application/json",
            headers={"X-Api-Key": key},
        ).status_code

    assert status() == 200
    out = run("keys", "revoke", prefix, capsys=capsys).out
    assert out.startswith(f"revoked API key {prefix} ('leaked')")
    assert status() == 401
    assert "was revoked already" in run("keys", "revoke", key, capsys=capsys).out  # the whole key works too
    with pytest.raises(CommandError, match="no API key has the prefix 'nosuch'"):
        call_command("predcache", "keys", "revoke", "nosuch")


def test_purge_unknown_model_fails():
    with pytest.raises(CommandError, match="no model"):
        call_command("predcache", "purge", "missing")


def test_warm_then_requests_hit(api, backend, http_model, tmp_path, capsys):
    warm_file = tmp_path / "warm.jsonl"
    warm_file.write_text("[1]\n[2]\n\n[1]\n")
    printed = run("warm", "echo", "--file", str(warm_file), capsys=capsys)
    assert "instances=2 computed=2 already_cached=0 errors=0" in printed.out
    assert "1 duplicate instances skipped" in printed.err

    response = api.predict("echo", {"instances": [[2], [1]]})
    assert response["X-Cache"] == "HIT"
    assert len(backend.calls()) == 1


def test_warm_reports_bad_lines(http_model, tmp_path):
    warm_file = tmp_path / "warm.jsonl"
    warm_file.write_text("[1]\n{oops\n")
    with pytest.raises(CommandError, match=r"warm\.jsonl: line 2: not valid JSON"):
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
        "--admit-after", "2", "--max-entry-bytes", "5000", "--purge-cron", "0 3 * * *",
        "--warm-rate", "20", "--warm-batch-size", "25", "--refresh-ahead", "300", "--l1", "on",
    )  # fmt: skip
    policy = CachePolicy.objects.get(model__name="p")
    assert (policy.ttl_seconds, policy.ttl_jitter, policy.mode) == (120, 0.2, "bypass")
    assert (policy.stale_while_revalidate_seconds, policy.stale_if_error_seconds) == (30, 600)
    assert (policy.round_decimals, policy.round_significant) == (None, 3)
    assert policy.ignore_fields == ["request_id", "meta.trace"]
    assert (policy.admit_after, policy.max_entry_bytes) == (2, 5000)
    assert (policy.purge_schedule, policy.warm_rate, policy.warm_batch_size) == ("0 3 * * *", 20, 25)
    assert policy.refresh_ahead_seconds == 300
    assert policy.l1 is True

    call_command(*base, "--round", "2")
    policy.refresh_from_db()
    assert (policy.round_decimals, policy.round_significant, policy.ttl_seconds) == (2, None, 120)
    call_command(*base, "--round", "off", "--cache")
    policy.refresh_from_db()
    assert (policy.round_decimals, policy.round_significant, policy.mode) == (None, None, "cache")
    call_command(*base, "--warm-rate", "off", "--purge-cron", "")
    policy.refresh_from_db()
    assert (policy.warm_rate, policy.purge_schedule, policy.l1) == (None, "", True)
    call_command(*base, "--l1", "off")
    policy.refresh_from_db()
    assert policy.l1 is False


@pytest.mark.parametrize(
    "flags",
    [
        ("--jitter", "0.9"),
        ("--admit-after", "0"),
        ("--round", "x"),
        ("--mode", "sometimes"),
        ("--ttl", "0"),
        ("--purge-cron", "every day"),
        ("--warm-rate", "0"),
        ("--warm-batch-size", "0"),
        ("--l1", "yes"),
    ],
)
def test_invalid_policy_flags_are_refused_and_change_nothing(db, flags):
    base = ("predcache", "models", "upsert", "p", "--backend", "http", "--target", "http://127.0.0.1:9/p")
    call_command(*base, "--ttl", "120")
    with pytest.raises(CommandError):
        call_command(*base, *flags)
    assert CachePolicy.objects.get(model__name="p").ttl_seconds == 120


def test_upsert_of_an_existing_model_needs_only_the_flags_that_change(http_model, backend, capsys):
    assert "updated model echo" in run("models", "upsert", "echo", "--ttl", "5", capsys=capsys).out
    model = ModelEndpoint.objects.get(name="echo")
    assert (model.backend, model.target, model.policy.ttl_seconds) == ("http", backend.predict_url, 5)


def test_upsert_of_a_new_model_asks_for_its_backend_and_target(db):
    with pytest.raises(CommandError, match="'fresh' is a new model: give its backend and target"):
        call_command("predcache", "models", "upsert", "fresh", "--ttl", "5")
    assert not ModelEndpoint.objects.exists()


def test_models_show_json_has_the_model_and_its_whole_policy(http_model, backend, capsys):
    run("models", "upsert", "echo", "--ttl", "90", "--stale-if-error", "30", capsys=capsys)
    shown = json.loads(run("models", "show", "echo", "--json", capsys=capsys).out)
    assert (shown["name"], shown["backend"], shown["target"]) == ("echo", "http", backend.predict_url)
    assert shown["policy"]["ttl_seconds"] == 90
    assert shown["policy"]["stale_if_error_seconds"] == 30
    assert {"mode", "ttl_jitter", "round_decimals", "ignore_fields", "purge_schedule"} <= set(shown["policy"])


def test_models_show_reads_as_fields_and_values(http_model, capsys):
    out = run("models", "show", "echo", capsys=capsys).out
    lines = dict(line.split(None, 1) for line in out.splitlines())
    assert lines["name"] == "echo"
    assert lines["policy.ttl_seconds"] == "300"
    assert lines["policy.round_decimals"] == "-"


def test_models_show_unknown_model_fails():
    with pytest.raises(CommandError, match="no model"):
        call_command("predcache", "models", "show", "missing")


def test_stats_is_a_table_with_what_the_cache_saved(api, backend, http_model, local_model, capsys):
    api.predict("echo", {"instances": [[1], [2]]})
    api.predict("echo", {"instances": [[1], [2]]})
    api.predict("echo", {"instances": [[1]]})
    runtime = get_runtime()
    runtime.stats.flush(runtime.client, runtime.keyspace)

    header, *rows = run("stats", capsys=capsys).out.splitlines()
    assert header.split("  ")[0].strip() == "MODEL"
    assert "CALLS SAVED" in header and "TIME SAVED" in header
    echo = next(row for row in rows if row.startswith("echo "))
    cells = echo.split()
    # 3 requests, 5 instances: 2 misses in one call, then 3 hits; 2 calls saved.
    assert cells[1:6] == ["3", "60.0%", "3", "2", "1"]
    assert cells[6] == "2"
    stats = json.loads(run("stats", "echo", "--json", capsys=capsys).out)
    per_instance_s = stats["backend_us"] / 1_000_000 / stats["backend_answered"]
    assert stats["backend_answered"] == 2 and per_instance_s > 0
    assert stats["backend_seconds_saved"] == round(3 * per_instance_s, 3)
    assert cells[7:9] == [f"{stats['backend_seconds_saved']:,.3f}", "s"]
    assert next(row for row in rows if row.startswith("iris ")).split()[1] == "0"


def test_stats_of_one_model_labels_every_figure(api, backend, http_model, capsys):
    api.predict("echo", {"instances": [[1]]})
    api.predict("echo", {"instances": [[1]]})
    runtime = get_runtime()
    runtime.stats.flush(runtime.client, runtime.keyspace)

    lines = {
        line.split("  ")[0]: line.split("  ")[-1].strip()
        for line in run("stats", "echo", capsys=capsys).out.splitlines()
    }
    assert lines["requests"] == "2"
    assert lines["hit ratio (of instances looked up)"] == "50.0%"
    assert lines["backend calls saved (~ requests - calls)"] == "1"
    assert lines["backend time saved (~ hits * time per instance)"].endswith(" s")
    assert lines["backend time per instance"].endswith(" ms")


def test_keys_create_says_the_key_follows(db, capsys):
    captured = run("keys", "create", "ops", capsys=capsys)
    assert captured.err.strip() == "created API key 'ops'; store it now, it is not shown again (next line):"
    assert len(captured.out.strip().splitlines()) == 1


def test_every_stats_field_has_a_label_in_the_report(http_model):
    from caching.management.reports import STATS_LABELS
    from caching.selectors import model_stats

    assert {field for field, _ in STATS_LABELS} == set(model_stats(model=http_model))
