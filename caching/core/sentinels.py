"""Explicit answers that are not values, so that ``None``, ``0``, ``""`` and ``[]`` can be values."""

from __future__ import annotations

from typing import Final


class NoValue:
    """The type of :data:`NO_VALUE`: nothing there (no entry, nothing remembered, no answer)."""

    _instance: NoValue | None = None

    def __new__(cls) -> NoValue:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "NO_VALUE"

    def __bool__(self) -> bool:
        return False

    def __reduce__(self) -> str:
        return "NO_VALUE"  # a copy (or an unpickled one) is the same object


NO_VALUE: Final = NoValue()
