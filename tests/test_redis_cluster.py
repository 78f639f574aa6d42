"""predcache on a real Redis Cluster (three primaries, a replica each), in this process.

The session's cluster (``redis_cluster``, tests/support/redis_cluster.py) is started from the
embedded redis-server; ``on_cluster`` points this test's settings at it (``REDIS_CLUSTER=true``,
``REDIS_URL`` naming one node). What a node served is read from the node itself (INFO
commandstats, SCAN, CLUSTER SLOTS), never from the client under test.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import pytest
import redis
from django.core.management import CommandError, call_command
from redis.crc import key_slot

from caching.core.hotset import hot_set_read
from caching.core.keys import KeySpace
from caching.core.ratelimit import Rate, TokenBuckets
from caching.core.redis_buckets import RedisTokenBuckets
from caching.core.redis_store import RedisPredictionStore
from caching.core.store import PredictionStore, redis_client
from caching.core.usage import measure_usage
from caching.runtime import get_runtime
from caching.services import api_key_create, model_cache_purge, model_upsert
from caching.services.purges import model_cache_reclaim
from tests.conftest import ApiClient
from tests.core.bucket_contract import BucketContract
from tests.core.store_contract import StoreContract
from tests.support.monitor import Observer
from tests.support.processes import free_port
from tests.support.redis_cluster import ClusterNode, RedisCluster, wait_for

pytestmark = pytest.mark.django_db

# Sent by the cluster to itself or by the tests' own observers, not by predcache.
NOT_PREDCACHES = {"info", "replconf", "ping", "psync", "sync", "cluster", "config"}


class TestRedisClusterBuckets(BucketContract):
    """The rate limits' token buckets, on the cluster (each key's bucket in a slot of its own)."""

    @pytest.fixture
    def prepared(self, redis_cluster: RedisCluster) -> None:
        self.url = redis_cluster.url

    def make_buckets(self) -> TokenBuckets:
        client = redis_client(self.url, socket_timeout=2, connect_timeout=2, cluster=True)
        return RedisTokenBuckets(client, KeySpace("pc:", "tests"))


class TestRedisClusterStore(StoreContract):
    """The store contract, on the cluster (each test's namespace in its own slot)."""

    @pytest.fixture(autouse=True)
    def _cluster(self, redis_cluster: RedisCluster) -> None:
        self.url = redis_cluster.url

    def make_store(self) -> PredictionStore:
        client = redis_client(self.url, socket_timeout=2, connect_timeout=2, cluster=True)
        return RedisPredictionStore(client, KeySpace("pc:", "tests"))


def model_slot(model: Any) -> int:
    return key_slot(get_runtime().keyspace.namespace(model.pk).encode())


class CommandCounts:
    """Reads each primary's count of every command it served so far (INFO commandstats).

    Its connections are opened at once, so their own handshakes are not counted later. Commands
    a script runs count as well: see test_round_trips.py for reading what a client sent.
    """

    def __init__(self, cluster: RedisCluster) -> None:
        self.observers = {node.port: node.client() for node in cluster.primaries()}
        for observer in self.observers.values():
            observer.ping()

    def read(self) -> dict[int, Counter[str]]:
        counts = {}
        for port, observer in self.observers.items():
            stats = observer.info("commandstats")
            counts[port] = Counter(
                {name.removeprefix("cmdstat_"): value["calls"] for name, value in stats.items()}
            )
        return counts

    def during(self, action: Any) -> tuple[dict[int, dict[str, int]], Any]:
        """The commands predcache sent each node while ``action`` ran, and what it returned."""
        before = self.read()
        result = action()
        after = self.read()
        delta = {}
        for port, counts in after.items():
            new = {
                name: calls - before[port][name]
                for name, calls in counts.items()
                if calls != before[port][name] and name.split("|")[0] not in NOT_PREDCACHES
            }
            if new:
                delta[port] = new
        return delta, result

    def close(self) -> None:
        for observer in self.observers.values():
            observer.close()


@pytest.fixture
def counts(on_cluster: RedisCluster) -> Any:
    counter = CommandCounts(on_cluster)
    yield counter
    counter.close()


def entry_keys_on(node: ClusterNode, model: Any) -> set[bytes]:
    """The model's entry keys that this one node holds (its own SCAN, no cluster routing)."""
    keyspace = get_runtime().keyspace
    pattern = keyspace.entry(keyspace.namespace(model.pk), "*")
    with node.client() as client:
        return set(client.scan_iter(match=pattern, count=1000))


@pytest.fixture
def spread_models(db: None, on_cluster: RedisCluster, backend: Any) -> list[Any]:
    """Models whose slots lie on every primary of the cluster (model ids decide the slots)."""
    models: list[Any] = []
    owners: set[int] = set()
    while len(owners) < len(on_cluster.primaries()):
        assert len(models) < 30, "30 models and still a primary with none"
        model, _ = model_upsert(name=f"spread{len(models)}", backend="http", target=backend.predict_url)
        models.append(model)
        owners.add(on_cluster.node_of_slot(model_slot(model)).port)
    return models


def test_a_miss_is_stored_and_a_hit_is_one_mget_on_the_node_owning_the_models_slot(
    on_cluster, counts, api, backend, http_model
):
    document = {"instances": [[1], [2], [3]], "parameters": {"p": 1}}
    assert api.predict("echo", document)["X-Cache"] == "MISS"
    assert api.predict("echo", document)["X-Cache"] == "HIT"  # the client has its slot map by now

    commands, response = counts.during(lambda: api.predict("echo", document))

    assert response["X-Cache"] == "HIT"
    assert response.json()["predictions"] == [{"echo": [n], "parameters": {"p": 1}} for n in (1, 2, 3)]
    owner = on_cluster.node_of_slot(model_slot(http_model))
    assert commands == {owner.port: {"mget": 1}}
    assert len(backend.calls()) == 1
    # Every key of the model is on that node (entries, generations), none on the others.
    namespace = get_runtime().keyspace.namespace(http_model.pk)
    held = {
        node.port: len(list(node.client().scan_iter(match=f"{namespace}:*")))
        for node in on_cluster.primaries()
    }
    assert held[owner.port] >= 3 + 2
    assert sum(held.values()) == held[owner.port]


def test_a_miss_is_one_locking_lookup_and_one_save_on_that_node(on_cluster, counts, api, backend, http_model):
    api.predict("echo", {"instances": [["warm-up"]]})  # the scripts are loaded on the node once
    api.predict("echo", {"instances": [["warm-up"]]})

    owner = on_cluster.node_of_slot(model_slot(http_model))

    commands, (sent, response) = counts.during(
        lambda: Observer(owner.client()).during(lambda: api.predict("echo", {"instances": [[1], [2]]}))
    )

    assert response["X-Cache"] == "MISS"
    assert sent == ["EVALSHA", "EVALSHA"]  # the lookup that takes the locks, the save that releases them
    assert set(commands) == {owner.port}  # the other primaries were sent nothing


L1_HIT = "predcache; hit; detail=l1"


def test_a_model_with_l1_on_is_answered_in_process_and_its_purge_is_pushed_by_its_primary(
    on_cluster, counts, api, backend
):
    """On a cluster the tier tracks each model on the primary owning its slot."""
    model_upsert(name="tiered", backend="http", target=backend.predict_url, l1=True)
    document = {"instances": [{"calls": "c"}]}  # each computation answers the model's call count
    wait_for(
        lambda: api.predict("tiered", document)["Cache-Status"] == L1_HIT,
        timeout=10,
        what="a hit from the in-process tier",
    )
    purged = api.predict("tiered", document).json()["predictions"]

    commands, hits = counts.during(lambda: [api.predict("tiered", document) for _ in range(20)])

    assert all(hit["Cache-Status"] == L1_HIT and hit.json()["predictions"] == purged for hit in hits)
    assert not any({"mget", "evalsha"} & set(node) for node in commands.values()), commands
    call_command("predcache", "purge", "tiered")
    after = api.predict("tiered", document)
    assert after["X-Cache"] == "MISS" and after.json()["predictions"] != purged


def test_after_a_failover_the_tier_tracks_the_models_new_primary(on_cluster, api, backend):
    """A replica takes over (CLUSTER FAILOVER, the old primary stays up as its replica): a purge on
    the new primary reaches the tier, which never serves the purged prediction."""
    model, _ = model_upsert(name="moved", backend="http", target=backend.predict_url, l1=True)
    document = {"instances": [{"calls": "m"}]}
    wait_for(
        lambda: api.predict("moved", document)["Cache-Status"] == L1_HIT,
        timeout=10,
        what="a hit from the in-process tier",
    )
    old = on_cluster.node_of_slot(model_slot(model))
    replica = on_cluster.replica_of(old)
    purged = api.predict("moved", document).json()["predictions"]

    replica.command("CLUSTER", "FAILOVER")
    wait_for(
        lambda: on_cluster.node_of_slot(model_slot(model)).port == replica.port, timeout=20, what="failover"
    )
    on_cluster.wait_healthy()
    call_command("predcache", "purge", "moved")  # on the new primary

    answers = [api.predict("moved", document) for _ in range(5)]
    assert all(a.status_code == 200 and a.json()["predictions"] != purged for a in answers)
    wait_for(
        lambda: api.predict("moved", document)["Cache-Status"] == L1_HIT,
        timeout=10,
        what="the tier serving again, tracked on the new primary",
    )


def test_instance_and_model_purges_on_the_cluster(on_cluster, api, backend, http_model, tmp_path, capsys):
    assert api.predict("echo", {"instances": [[1], [2], [3]]})["X-Cache"] == "MISS"
    instances = tmp_path / "purge.jsonl"
    instances.write_text("[1]\n")
    capsys.readouterr()

    call_command("predcache", "purge", "echo", "--instances", str(instances))

    assert capsys.readouterr().out.strip() == "removed 1 cached prediction(s) of 1 instance(s) of echo"
    assert api.predict("echo", {"instances": [[1]]})["X-Cache"] == "MISS"
    assert api.predict("echo", {"instances": [[2], [3]]})["X-Cache"] == "HIT"

    call_command("predcache", "purge", "echo")

    assert api.predict("echo", {"instances": [[1], [2], [3]]})["X-Cache"] == "MISS"
    assert [call["instances"] for call in backend.calls()] == [[[1], [2], [3]], [[1]], [[1], [2], [3]]]


def test_a_warm_through_the_read_through_path_fills_the_cluster(
    on_cluster, api, backend, http_model, tmp_path, capsys
):
    instances = tmp_path / "warm.jsonl"
    instances.write_text("".join(f"[{n}]\n" for n in range(30)))

    call_command("predcache", "warm", "echo", "--file", str(instances))

    assert capsys.readouterr().out.strip().endswith("instances=30 computed=30 already_cached=0 errors=0")
    backend.reset_calls()
    response = api.predict(
        "echo", {"instances": [[n] for n in range(30)]}, **{"Cache-Control": "only-if-cached"}
    )
    assert response.status_code == 200
    assert response["X-Cache"] == "HIT"
    assert backend.calls() == []
    owner = on_cluster.node_of_slot(model_slot(http_model))
    assert len(entry_keys_on(owner, http_model)) == 30


def test_stats_hot_sets_and_the_dashboard_span_the_primaries(
    on_cluster, settings, api, spread_models, admin_client, capsys
):
    settings.PREDCACHE_HOT_SAMPLE_RATE = 1  # every fresh hit is sampled for the hot set
    for model in spread_models:
        api.predict(model.name, {"instances": [["a"], ["b"]]})
        api.predict(model.name, {"instances": [["a"]]})
    runtime = get_runtime()

    # One flush: counters, per-minute counters and hot-set scripts of models on every primary.
    assert runtime.stats.flush(runtime.client, runtime.keyspace)

    for model in spread_models:
        capsys.readouterr()
        call_command("predcache", "stats", model.name, "--json")
        stats = json.loads(capsys.readouterr().out)
        assert (stats["requests"], stats["hits"], stats["misses"]) == (2, 1, 2)
        hot = hot_set_read(runtime.client, runtime.keyspace, runtime.keyspace.namespace(model.pk))
        assert len(hot) == 1 and hot[0].instance == ["a"]
    overview = admin_client.get("/admin/dashboard/")
    assert overview.status_code == 200
    rows = {row.name: row for row in overview.context["models"]}
    assert all(rows[model.name].counters["requests"] == 2 for model in spread_models)
    page = admin_client.get(f"/admin/dashboard/{spread_models[-1].name}/")
    assert page.status_code == 200
    assert page.context["figures"].usage.entries == 2


def test_usage_and_reclaim_walk_every_primary(on_cluster, api, spread_models):
    runtime = get_runtime()
    owners = {model.pk: on_cluster.node_of_slot(model_slot(model)) for model in spread_models}
    assert len({node.port for node in owners.values()}) == 3
    for count, model in enumerate(spread_models, start=1):
        api.predict(model.name, {"instances": [[n] for n in range(count)]})

    for count, model in enumerate(spread_models, start=1):
        usage = measure_usage(runtime.client, runtime.keyspace, runtime.keyspace.namespace(model.pk))
        assert (usage.entries, usage.complete, usage.sampled) == (count, True, count)
        assert len(entry_keys_on(owners[model.pk], model)) == count

    for model in spread_models:
        model_cache_purge(model=model, requested_by="tests", reclaim=False)
    for count, model in enumerate(spread_models, start=1):
        assert model_cache_reclaim(model=model) == count
        assert entry_keys_on(owners[model.pk], model) == set()


def test_readyz_pings_every_primary(on_cluster, counts, client, db):
    assert client.get("/readyz").json() == {"status": "ok", "checks": {"database": "ok", "redis": "ok"}}
    before = counts.read()
    client.get("/readyz")
    after = counts.read()
    # PING is the cluster's own traffic too (NOT_PREDCACHES): read apart, at least one per primary.
    pinged = {port for port, served in after.items() if served["ping"] > before[port]["ping"]}
    assert pinged >= {node.port for node in on_cluster.primaries()}


def test_an_unreachable_cluster_at_start_serves_from_the_model_and_says_so(
    settings, api, backend, http_model, client
):
    settings.REDIS_URL = f"redis://127.0.0.1:{free_port()}/0"
    settings.PREDCACHE_REDIS_CLUSTER = True

    response = api.predict("echo", {"instances": [[1]]})

    assert response.status_code == 200
    assert response["X-Cache"] == "BYPASS"
    assert response.json()["predictions"] == [{"echo": [1], "parameters": None}]
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["status"] == "degraded"
    for command in (("purge", "echo"), ("stats", "echo")):  # an outage, said as such (exit 75)
        with pytest.raises(CommandError, match="Redis is unavailable") as outage:
            call_command("predcache", *command)
        assert outage.value.returncode == 75


def test_a_process_started_before_its_cluster_caches_once_the_cluster_answers(
    settings, api, backend, http_model, tmp_path
):
    cluster = RedisCluster(tmp_path / "cluster", replicas=0)  # its ports are chosen, nothing listens yet
    settings.REDIS_URL = cluster.url
    settings.PREDCACHE_REDIS_CLUSTER = True
    settings.PREDCACHE_REDIS_BREAKER_RESET_SECONDS = 0.1
    assert api.predict("echo", {"instances": [[1]]})["X-Cache"] == "BYPASS"
    cluster.start()
    try:
        wait_for(
            lambda: api.predict("echo", {"instances": [[1]]})["X-Cache"] == "HIT",
            timeout=30,
            what="the cluster client built, the entry stored and then found",
        )
    finally:
        cluster.stop()


def test_a_cluster_url_naming_another_database_is_refused():
    with pytest.raises(ValueError, match="only database 0"):
        redis_client("redis://127.0.0.1:7000/3", socket_timeout=1, connect_timeout=1, cluster=True)


def test_a_command_across_two_models_slots_is_refused_by_the_client_not_split(on_cluster):
    """What the hash tag guards against: keys of two models never meet in one command."""
    client = redis_client(on_cluster.url, socket_timeout=1, connect_timeout=1, cluster=True)
    with pytest.raises(redis.exceptions.RedisClusterException, match=r"same key slot|same slot"):
        client.execute_command("MGET", "pc:{tests.m1}:gen", "pc:{tests.m2}:gen")
    client.close()


def test_usage_and_reclaim_find_a_models_entries_while_its_slot_migrates(
    settings, api, backend, http_model, tmp_path
):
    """A resharding moves a slot key by key: for a while a model's entries are on two primaries."""
    cluster = RedisCluster(tmp_path / "cluster", replicas=0).start()
    try:
        settings.REDIS_URL = cluster.url
        settings.PREDCACHE_REDIS_CLUSTER = True
        assert api.predict("echo", {"instances": [[n] for n in range(10)]})["X-Cache"] == "MISS"
        slot = model_slot(http_model)
        source = cluster.node_of_slot(slot)
        target = next(node for node in cluster.primaries() if node is not source)
        moved = sorted(entry_keys_on(source, http_model))[:4]
        target.command("CLUSTER", "SETSLOT", slot, "IMPORTING", source.node_id)
        source.command("CLUSTER", "SETSLOT", slot, "MIGRATING", target.node_id)
        source.command("MIGRATE", "127.0.0.1", target.port, "", 0, 5000, "KEYS", *moved)
        assert (len(entry_keys_on(source, http_model)), len(entry_keys_on(target, http_model))) == (6, 4)
        runtime = get_runtime()
        namespace = runtime.keyspace.namespace(http_model.pk)

        usage = measure_usage(runtime.client, runtime.keyspace, namespace)
        freed = runtime.store.reclaim(namespace, lambda header: False)  # every entry dead, wherever it is

        assert (usage.entries, usage.complete) == (10, True)
        assert freed == 10
        assert entry_keys_on(source, http_model) == entry_keys_on(target, http_model) == set()
        # Meanwhile Redis refuses the model's multi-key lookups (TRYAGAIN): its requests go to the model.
        response = api.predict("echo", {"instances": [[1]]})
        assert (response.status_code, response["X-Cache"]) == (200, "BYPASS")
    finally:
        cluster.stop()


def test_tagged_values_on_the_cluster_and_a_forged_one_is_a_miss(
    settings, on_cluster, api, backend, http_model
):
    """PREDCACHE_VALUE_HMAC_KEY holds on a cluster: the tag covers the entry, wherever its slot is."""
    from tests.test_value_integrity import GENUINE, INSTANCE, KEY, entry_key, forge

    settings.PREDCACHE_VALUE_HMAC_KEY = KEY
    document = {"instances": [INSTANCE]}
    assert api.predict("echo", document)["X-Cache"] == "MISS"
    assert api.predict("echo", document)["X-Cache"] == "HIT"
    key, _, _ = entry_key()
    owner = on_cluster.node_of_slot(model_slot(http_model))
    with owner.client() as client:
        assert client.exists(key)

    forge({"echo": "forged"})
    answer = api.predict("echo", document)

    assert (answer["X-Cache"], answer.json()["predictions"]) == ("MISS", GENUINE)
    assert len(backend.calls()) == 2


def test_a_rate_limit_on_the_cluster_is_one_bucket_on_the_node_owning_its_slot(
    on_cluster, backend, http_model
):
    key = api_key_create(label="limited", rate=Rate(2, 60))
    limited = ApiClient(key)
    statuses = [limited.predict("echo", {"instances": [[1]]}).status_code for _ in range(3)]
    assert statuses == [200, 200, 429]
    bucket = get_runtime().keyspace.rate_bucket(key.split(".")[0])
    holders = []
    for node in on_cluster.primaries():
        with node.client() as client:  # the node's own SCAN, no cluster routing
            if list(client.scan_iter(match=bucket)):
                holders.append(node.port)
    assert holders == [on_cluster.node_of_slot(key_slot(bucket.encode())).port]
