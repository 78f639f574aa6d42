"""What clients sent a Redis server while an action ran, as the server saw it (its MONITOR feed)."""

from __future__ import annotations

import uuid

import redis


class Observer:
    """The commands clients sent the server while an action ran, as the server saw them."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client

    def during(self, action) -> tuple[list[str], object]:
        marker = f"end-{uuid.uuid4().hex}"
        with self.client.monitor() as feed:
            result = action()
            self.client.echo(marker)  # the feed is in order: everything before it is the action's
            sent = []
            for command in feed.listen():
                client = (command["client_address"], command["client_port"])
                if command["command"] == f"ECHO {marker}":  # less what the marker's connection sent
                    return [name for sender, name in sent if sender != client], result
                if command["client_type"] != "lua":
                    sent.append((client, command["command"].split()[0]))
        raise AssertionError("the monitor feed ended")
