"""PREDCACHE_VALUE_HMAC_KEY end to end: a value forged in the real Redis is never served by predict."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from django.core.management import call_command
from django.test import Client

from caching.core.codec import FLAG_TAGGED, CachedPrediction, decode, decode_header, encode
from caching.core.integrity import ValueKeys
from caching.runtime import get_runtime
from caching.selectors import served_model_get
from caching.services import model_upsert
from tests.support.metrics import samples, value
from tests.test_deploy_settings import settings_error, settings_under

pytestmark = pytest.mark.django_db

KEY, OLD_KEY = "new-key-" + "n" * 40, "old-key-" + "o" * 40
INSTANCE = {"x": 1}
GENUINE = [{"echo": INSTANCE, "parameters": None}]
L1_HIT = "predcache; hit; detail=l1"


def entry_key(model: str = "echo", instance: Any = INSTANCE) -> tuple[str, str, str]:
    """The Redis key of ``instance``'s entry, with its namespace and digest."""
    runtime = get_runtime()
    served = served_model_get(name=model)
    assert served is not None
    [digest] = runtime.cache.instance_digests(served.spec, [instance], None)
    return runtime.keyspace.entry(served.spec.namespace, digest), served.spec.namespace, digest


def forge(prediction: Any, *, keys: ValueKeys | None = None) -> bytes:
    """Overwrite the entry with another prediction, as someone who can write to Redis could: the
    genuine header (generation, freshness) kept, so everything but the tag says "serve me"."""
    key, namespace, digest = entry_key()
    client = get_runtime().client
    header = decode_header(client.get(key))
    forged = CachedPrediction(prediction, header["g"], header["t"], header["v"], header["d"], header["x"])
    raw = encode(forged, keys=keys, namespace=namespace, digest=digest)
    client.set(key, raw, ex=300)
    return raw


def stats_of(model: str, capsys: Any) -> dict[str, Any]:
    runtime = get_runtime()
    runtime.stats.flush(runtime.client, runtime.keyspace)
    capsys.readouterr()
    call_command("predcache", "stats", model, "--json")
    return dict(json.loads(capsys.readouterr().out))


def integrity_failures_metric() -> float:
    response = Client().get("/metrics")
    assert response.status_code == 200
    return value(samples(response.content), "predcache_integrity_failures_total", model="echo")


def predict(api: Any) -> Any:
    return api.predict("echo", {"instances": [INSTANCE]})


def test_a_forged_value_is_a_miss_answered_by_the_model_counted_and_overwritten(
    settings, api, backend, http_model, capsys
):
    settings.PREDCACHE_VALUE_HMAC_KEY = KEY
    settings.PREDCACHE_METRICS_TOKEN = ""
    assert predict(api)["X-Cache"] == "MISS"
    assert predict(api)["X-Cache"] == "HIT"
    key, namespace, digest = entry_key()
    stored = get_runtime().client.get(key)
    assert stored[1] & FLAG_TAGGED
    keys = ValueKeys(KEY.encode())
    assert decode(stored, keys=keys, namespace=namespace, digest=digest).prediction == GENUINE[0]
    metric_before = integrity_failures_metric()

    for forger_keys in (None, ValueKeys(b"a key that is not ours, 32 bytes or more")):
        forged = forge({"echo": "forged"}, keys=forger_keys)
        answer = predict(api)
        assert answer.status_code == 200
        assert answer["X-Cache"] == "MISS"
        assert answer.json()["predictions"] == GENUINE
        # The model's answer replaced the forged value: served as a hit from now on.
        assert get_runtime().client.get(key) != forged
        again = predict(api)
        assert again["X-Cache"] == "HIT" and again.json()["predictions"] == GENUINE

    assert len(backend.calls()) == 3
    stats = stats_of("echo", capsys)
    assert stats["integrity_failures"] == 2 and stats["decode_errors"] == 0
    assert integrity_failures_metric() - metric_before == 2
    call_command("predcache", "stats", "echo")
    lines = capsys.readouterr().out.splitlines()
    shown = {line.split("  ")[0]: line.split("  ")[-1].strip() for line in lines}
    assert shown["entries whose HMAC tag did not verify"] == "2"


def test_a_forged_value_is_not_served_by_the_in_process_tier_either(settings, api, backend, http_model):
    settings.PREDCACHE_VALUE_HMAC_KEY = KEY
    model_upsert(name="echo", backend="http", target=backend.predict_url, l1=True)
    deadline = time.monotonic() + 10
    while predict(api).get("Cache-Status") != L1_HIT:  # the tier answers once Redis tracks its keys
        assert time.monotonic() < deadline, "the in-process tier never answered"

    forge({"echo": "forged"})  # Redis pushes the change: the tier forgets what it held
    answer = predict(api)
    assert answer["X-Cache"] == "MISS" and answer.json()["predictions"] == GENUINE
    assert predict(api).json()["predictions"] == GENUINE


def test_a_genuine_value_copied_under_another_instance_is_not_served(settings, api, backend, http_model):
    settings.PREDCACHE_VALUE_HMAC_KEY = KEY
    api.predict("echo", {"instances": [{"x": 1}, {"x": 2}]})
    one, _, _ = entry_key(instance={"x": 1})
    two, _, _ = entry_key(instance={"x": 2})
    client = get_runtime().client
    client.set(two, client.get(one), ex=300)

    answer = api.predict("echo", {"instances": [{"x": 1}, {"x": 2}]})
    assert answer["X-Cache"] == "PARTIAL"
    assert [p["echo"] for p in answer.json()["predictions"]] == [{"x": 1}, {"x": 2}]


def test_rotation_serves_entries_of_the_old_key_while_it_is_configured(
    settings, api, backend, http_model, capsys
):
    settings.PREDCACHE_VALUE_HMAC_KEY = OLD_KEY
    assert predict(api)["X-Cache"] == "MISS"

    settings.PREDCACHE_VALUE_HMAC_KEY, settings.PREDCACHE_VALUE_HMAC_OLD_KEY = KEY, OLD_KEY
    rotated = predict(api)
    assert rotated["X-Cache"] == "HIT" and rotated.json()["predictions"] == GENUINE
    fresh = api.predict("echo", {"instances": [{"x": 2}]})
    assert fresh["X-Cache"] == "MISS"
    assert stats_of("echo", capsys)["integrity_failures"] == 0

    settings.PREDCACHE_VALUE_HMAC_OLD_KEY = ""  # rotation done: the old key's entries are misses
    assert predict(api)["X-Cache"] == "MISS"
    assert api.predict("echo", {"instances": [{"x": 2}]})["X-Cache"] == "HIT"  # written under the new
    assert stats_of("echo", capsys)["integrity_failures"] == 1
    assert len(backend.calls()) == 3


def test_without_a_key_values_are_untagged_and_served_as_stored(settings, api, backend, http_model, capsys):
    settings.PREDCACHE_VALUE_HMAC_KEY = ""
    assert predict(api)["X-Cache"] == "MISS"
    key, _, _ = entry_key()
    stored = get_runtime().client.get(key)
    assert not stored[1] & FLAG_TAGGED and decode(stored).prediction == GENUINE[0]
    # What the key protects against: without it, whoever writes to Redis is believed.
    forge({"echo": "forged"})
    served = predict(api)
    assert served["X-Cache"] == "HIT" and served.json()["predictions"] == [{"echo": "forged"}]
    assert stats_of("echo", capsys)["integrity_failures"] == 0


def test_keys_are_checked_when_the_settings_are_read():
    assert settings_under(
        {"PREDCACHE_VALUE_HMAC_KEY": KEY, "PREDCACHE_VALUE_HMAC_OLD_KEY": OLD_KEY},
        "PREDCACHE_VALUE_HMAC_KEY",
        "PREDCACHE_VALUE_HMAC_OLD_KEY",
    ) == {"PREDCACHE_VALUE_HMAC_KEY": KEY, "PREDCACHE_VALUE_HMAC_OLD_KEY": OLD_KEY}
    assert "PREDCACHE_VALUE_HMAC_KEY must be at least 32 characters" in settings_error(
        {"PREDCACHE_VALUE_HMAC_KEY": "short"}
    )
    assert "PREDCACHE_VALUE_HMAC_OLD_KEY needs PREDCACHE_VALUE_HMAC_KEY" in settings_error(
        {"PREDCACHE_VALUE_HMAC_OLD_KEY": OLD_KEY}
    )
