"""The Redis store passes the store contract, on the test session's real Redis."""

from __future__ import annotations

import pytest

from caching.core.keys import KeySpace
from caching.core.redis_store import RedisPredictionStore
from caching.core.store import PredictionStore, redis_client
from tests.conftest import SESSION_PREFIX
from tests.core.store_contract import StoreContract


class TestRedisStore(StoreContract):
    namespace_prefix = SESSION_PREFIX  # deleted with the session's keys on a borrowed Redis

    @pytest.fixture(autouse=True)
    def _redis(self, redis_url: str) -> None:
        self.url = redis_url

    def make_store(self) -> PredictionStore:
        client = redis_client(self.url, socket_timeout=2, connect_timeout=2)
        return RedisPredictionStore(client, KeySpace(SESSION_PREFIX, "tests"))
