"""What a client may read of an upstream failure, and instance numbers as the client sent them."""

from __future__ import annotations

import http.client

import pytest
import urllib3

from caching.backends.base import (
    BackendRejectedInput,
    client_numbered,
    client_reason,
    connection_failure,
)


@pytest.mark.parametrize(
    "text",
    [
        'Traceback (most recent call last):\n  File "/srv/app.py", line 1, in <module>',
        'File "/srv/app.py", line 1',
        "error in /usr/lib/python3.11/json/decoder.py",
        "cannot open C:\\models\\a.bin",
        "could not connect to postgresql://user:secret@db:5432/features",
        "feature store http://10.0.0.3:8080/v1/features timed out",
        "cannot load models/iris/model.joblib",
        "NullPointerException at org.foo.Bar.predict(Bar.java:42)",
        "model <server.Model object at 0x7f3a2b> failed",
        "<!DOCTYPE html><html><body>Internal Server Error</body></html>",
        "",
        None,
    ],
)
def test_internals_are_not_a_reason(text):
    assert client_reason(text) is None


@pytest.mark.parametrize(
    "text,reason",
    [
        ("X has 2 features, but expects 4", "X has 2 features, but expects 4"),
        ("first line\nsecond line", "first line"),
        ("ratio 1/2/3 is wrong", "ratio 1/2/3 is wrong"),
    ],
)
def test_a_reason_is_one_clean_line(text, reason):
    assert client_reason(text) == reason


def test_a_reason_is_bounded():
    reason = client_reason("x" * 5000)
    assert reason is not None and len(reason) == 200 and reason.endswith("…")


def test_connection_failures_are_named_from_the_exception_chain():
    try:
        urllib3.PoolManager(retries=False).request("GET", "http://127.0.0.1:1/")
    except urllib3.exceptions.HTTPError as exc:
        assert connection_failure(exc) == "connection refused"
    aborted = urllib3.exceptions.ProtocolError("Connection aborted.", http.client.RemoteDisconnected("x"))
    assert connection_failure(aborted) == "connection closed before an answer"
    assert connection_failure(RuntimeError("?")) == "connection failed"


def test_a_backends_own_number_goes_in_front_as_the_clients():
    numbered = client_numbered(BackendRejectedInput("must be a list", instance=1), positions=[3, 7])
    assert str(numbered) == "instance 7: must be a list"


@pytest.mark.parametrize(
    "message,expected",
    [
        ("instance 1: bad", "instance 7: bad"),
        ("instances[0] is too long", "instances[3] is too long"),
        ("Failed to process element: 1 key: x", "Failed to process element: 7 key: x"),
        ("instance 5: out of range", "instance 5: out of range"),  # not a number it was sent
        ("expected 3 values at element 1", "expected 3 values at element 1"),  # a value, not an instance
        ("expected 3 instances 1 given", "expected 3 instances 1 given"),
        ("shape mismatch", "shape mismatch"),
    ],
)
def test_numbers_in_a_servers_message_are_the_clients(message, expected):
    assert str(client_numbered(BackendRejectedInput(message), positions=[3, 7])) == expected


def test_numbers_count_within_the_call_the_server_was_sent():
    rejected = BackendRejectedInput("instance 0: bad", sent=[1, 2])
    assert str(client_numbered(rejected, positions=[4, 5, 6])) == "instance 5: bad"


def test_a_call_of_one_instance_names_it():
    rejected = BackendRejectedInput("model server answered HTTP 400: bad value", sent=[1])
    assert (
        str(client_numbered(rejected, positions=[4, 5]))
        == "instance 5: model server answered HTTP 400: bad value"
    )
