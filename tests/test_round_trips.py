"""Round trips counted at the Redis server: a hit is one, a miss at most two.

Counted from what Redis reports itself, on a Redis of the test's own: its MONITOR feed names
every command a client sent apart from those a script ran (``INFO commandstats`` counts both
alike). None of the request path's calls is a multi-command pipeline, so each command a
client sent is one round trip.

An entry this process last saw fresh is looked up with a plain MGET; if it was purged or
evicted since, its lock costs a round trip of its own (three for that miss, once per entry and
process). Not counted here, by design: a stale-while-revalidate refresh's save (on a background thread,
after the response), a single-flight waiter's polls (two reads per poll while it waits), the
first use of a script by a process (SCRIPT LOAD once), and the connection each thread opens
for its hits' MGETs (HELLO and CLIENT SETINFO, once per thread: caching/core/thread_connections.py).
"""

from __future__ import annotations

import pytest
import redis

from tests.support.monitor import Observer
from tests.support.processes import RedisServer

pytestmark = pytest.mark.django_db


@pytest.fixture
def observed(settings, tmp_path):
    server = RedisServer(tmp_path / "redis").start()
    settings.REDIS_URL = server.url
    yield Observer(redis.Redis.from_url(server.url))
    server.stop()


def warm_up(api) -> None:
    """This process loads its scripts, and this thread opens its connection for hits, once."""
    for _ in range(2):
        api.predict("echo", {"instances": [["warm-up"]]})


def test_a_miss_is_two_round_trips_and_a_hit_one(api, backend, http_model, observed):
    warm_up(api)
    document = {"instances": [[1], [2], [3]], "parameters": {"p": 1}}

    sent, miss = observed.during(lambda: api.predict("echo", document))
    assert miss["X-Cache"] == "MISS"
    assert sent == ["EVALSHA", "EVALSHA"]  # the lookup that takes the locks, the save that releases them

    sent, hit = observed.during(lambda: api.predict("echo", document))
    assert (hit["X-Cache"], sent) == ("HIT", ["MGET"])


def forget_what_this_process_saw():
    """As if another web process had served the entries so far (hints are per process)."""
    from caching.runtime import get_runtime

    hints = get_runtime().cache.hints
    hints.forget(list(hints._until))


def test_a_partial_batch_and_a_purged_entry_miss_in_two(api, backend, http_model, observed):
    from django.core.management import call_command

    api.predict("echo", {"instances": [[1]]})
    sent, partial = observed.during(lambda: api.predict("echo", {"instances": [[1], [2]]}))
    assert (partial["X-Cache"], sent) == ("PARTIAL", ["EVALSHA", "EVALSHA"])

    forget_what_this_process_saw()
    call_command("predcache", "purge", "echo", "--no-reclaim")
    sent, purged = observed.during(lambda: api.predict("echo", {"instances": [[1]]}))
    assert (purged["X-Cache"], sent) == ("MISS", ["EVALSHA", "EVALSHA"])


def test_an_entry_this_process_saw_fresh_then_purged_costs_one_more_round_trip_once(
    api, backend, http_model, observed
):
    """Its lookup was a plain MGET (it was fresh when last seen), so its lock is a trip of its own."""
    from django.core.management import call_command

    warm_up(api)
    api.predict("echo", {"instances": [[1]]})
    call_command("predcache", "purge", "echo", "--no-reclaim")
    sent, purged = observed.during(lambda: api.predict("echo", {"instances": [[1]]}))
    assert (purged["X-Cache"], sent) == ("MISS", ["MGET", "SET", "EVALSHA"])  # read, lock, save
    call_command("predcache", "purge", "echo", "--no-reclaim")
    forget_what_this_process_saw()
    sent, again = observed.during(lambda: api.predict("echo", {"instances": [[1]]}))
    assert (again["X-Cache"], sent) == ("MISS", ["EVALSHA", "EVALSHA"])


def test_a_hit_seen_first_by_this_process_is_still_one_round_trip(api, backend, http_model, observed):
    """Entries another process wrote: the lookup script finds them servable and locks nothing."""
    api.predict("echo", {"instances": [[7]]})
    forget_what_this_process_saw()
    sent, hit = observed.during(lambda: api.predict("echo", {"instances": [[7]]}))
    assert (hit["X-Cache"], sent) == ("HIT", ["EVALSHA"])  # the lookup script, finding it servable


def limited_client(rate: str):
    from caching.core.ratelimit import Rate
    from caching.services import api_key_create
    from tests.conftest import ApiClient

    return ApiClient(api_key_create(label=f"limited {rate}", rate=Rate.parse(rate)))


def test_a_rate_limited_key_spends_leased_tokens_so_its_hits_stay_one_round_trip(
    backend, http_model, observed
):
    limited = limited_client("1000/m")  # leases 50 tokens at a time
    warm_up(limited)  # its first request leased
    limited.predict("echo", {"instances": [[5]]})
    sent, hit = observed.during(lambda: limited.predict("echo", {"instances": [[5]]}))
    assert (hit["X-Cache"], sent) == ("HIT", ["MGET"])


def test_a_key_limited_to_under_40_a_period_leases_one_token_a_request(backend, http_model, observed):
    """Its tokens are leased one at a time, so the limit holds to the request across processes."""
    limited = limited_client("39/m")
    warm_up(limited)
    limited.predict("echo", {"instances": [[5]]})
    sent, hit = observed.during(lambda: limited.predict("echo", {"instances": [[5]]}))
    assert (hit["X-Cache"], sent) == ("HIT", ["EVALSHA", "MGET"])  # the lease, then the lookup
