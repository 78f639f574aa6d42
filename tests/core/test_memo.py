"""The expiring memory behind the model-settings and API-key caches."""

from __future__ import annotations

from caching.core.memo import NO_VALUE, ExpiringMemo


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_values_are_remembered_for_their_time_only():
    clock = Clock()
    memo: ExpiringMemo[str, int] = ExpiringMemo(1.0, clock=clock)
    memo.put("a", 1)
    clock.now = 0.9
    assert memo.get("a") == 1
    clock.now = 1.0
    assert memo.get("a") is NO_VALUE


def test_none_and_falsy_values_are_remembered_as_values():
    memo: ExpiringMemo[str, object] = ExpiringMemo(10)
    for key, value in {"none": None, "zero": 0, "empty": ""}.items():
        memo.put(key, value)
        assert memo.get(key) is value or memo.get(key) == value
        assert memo.get(key) is not NO_VALUE
    assert memo.get("never") is NO_VALUE


def test_the_memory_stays_bounded_and_clears():
    memo: ExpiringMemo[int, int] = ExpiringMemo(10, max_entries=3)
    for number in range(4):
        memo.put(number, number)
    assert [memo.get(number) for number in range(4)] == [NO_VALUE, NO_VALUE, NO_VALUE, 3]
    memo.clear()
    assert memo.get(3) is NO_VALUE
