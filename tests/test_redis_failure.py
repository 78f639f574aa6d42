"""Redis is an accelerator: when it stops, predictions keep coming from the backend."""

from __future__ import annotations

import pytest

from tests.support.processes import RedisServer, free_port

pytestmark = pytest.mark.django_db


@pytest.fixture
def own_redis(settings, tmp_path):
    server = RedisServer(tmp_path / "redis").start()
    settings.REDIS_URL = server.url
    yield server
    server.stop()


def test_requests_succeed_from_the_backend_after_redis_stops(api, backend, http_model, own_redis):
    assert api.predict("echo", {"instances": [[1]]})["X-Cache"] == "MISS"
    assert api.predict("echo", {"instances": [[1]]})["X-Cache"] == "HIT"

    own_redis.stop()
    for _ in range(3):
        response = api.predict("echo", {"instances": [[1], [2]]})
        assert response.status_code == 200
        assert response["X-Cache"] == "BYPASS"
        assert [p["echo"] for p in response.json()["predictions"]] == [[1], [2]]
    assert len(backend.calls()) == 4


def test_unreachable_redis_serves_from_backend(api, backend, http_model, settings):
    settings.REDIS_URL = f"redis://127.0.0.1:{free_port()}/0"
    response = api.predict("echo", {"instances": [{"return": 0}]})
    assert response.status_code == 200
    assert response["X-Cache"] == "BYPASS"
    assert response.json()["predictions"] == [0]


def test_readyz_reports_redis_down_and_stays_ready_as_predictions_go_to_the_model(
    db, own_redis, client, api, backend, http_model
):
    assert client.get("/readyz").json() == {"status": "ok", "checks": {"database": "ok", "redis": "ok"}}
    own_redis.stop()  # as during a Memorystore failover: a new instance must still start
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.json()["status"] == "degraded"
    assert response.json()["checks"]["redis"].startswith("error")
    assert response.json()["checks"]["database"] == "ok"
    assert api.predict("echo", {"instances": [[7]]})["X-Cache"] == "BYPASS"


def test_a_hit_is_exactly_one_redis_round_trip(api, backend, http_model, own_redis):
    import redis

    document = {"instances": [[1], [2], [3]], "parameters": {"p": 1}}
    api.predict("echo", document)
    api.predict("echo", document)  # this thread opens its connection for hits (HELLO, CLIENT) once
    observer = redis.Redis.from_url(own_redis.url)

    def commands() -> dict[str, int]:
        stats = observer.info("commandstats")
        return {name: value["calls"] for name, value in stats.items() if name != "cmdstat_info"}

    before = commands()
    response = api.predict("echo", document)
    after = commands()

    assert response["X-Cache"] == "HIT"
    delta = {name: after[name] - before.get(name, 0) for name in after if after[name] != before.get(name, 0)}
    assert delta == {"cmdstat_mget": 1}


def test_a_redis_that_refuses_writes_still_answers_and_says_nothing_was_stored(
    api, backend, http_model, own_redis, caplog
):
    """Out of memory under noeviction: reads work, writes fail; predictions still flow."""
    import redis

    admin = redis.Redis.from_url(own_redis.url)
    admin.config_set("maxmemory-policy", "noeviction")
    admin.config_set("maxmemory", 1)  # every write is now refused with an OOM error reply

    for _ in range(2):
        response = api.predict("echo", {"instances": [[1]]})
        assert response.status_code == 200
        assert response["X-Cache"] == "MISS"
        assert response["Cache-Status"] == "predcache; fwd=miss"
        assert response.json()["predictions"] == [{"echo": [1], "parameters": None}]
    assert "could not store predictions" in caplog.text

    admin.config_set("maxmemory", 0)
    stored = api.predict("echo", {"instances": [[1]]})
    assert stored["Cache-Status"] == "predcache; fwd=miss; stored"
    assert api.predict("echo", {"instances": [[1]]})["X-Cache"] == "HIT"


def test_cli_reports_redis_down_as_an_error_not_a_traceback(http_model, own_redis):
    from django.core.management import CommandError, call_command

    own_redis.stop()
    for command in (("purge", "echo"), ("stats", "echo")):
        with pytest.raises(CommandError, match="Redis is unavailable"):
            call_command("predcache", *command)


def test_the_cli_exits_75_while_redis_is_down_and_1_for_a_mistake(http_model, own_redis):
    """A script can retry on EX_TEMPFAIL (sysexits.h) and stop on anything else."""
    from django.core.management import CommandError, call_command

    with pytest.raises(CommandError, match="no model is registered as 'nope'") as mistake:
        call_command("predcache", "purge", "nope")
    assert mistake.value.returncode == 1
    own_redis.stop()
    with pytest.raises(CommandError, match="Redis is unavailable") as outage:
        call_command("predcache", "purge", "echo")
    assert outage.value.returncode == 75
