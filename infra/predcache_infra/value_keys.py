"""The HMAC key of stored values (PREDCACHE_VALUE_HMAC_KEY), generated, and rotated keeping the one before.

Two generated passwords take turns. Rotation `n` (`predcache:valueHmacKeyRotation`, 0 at first) writes
with slot `n % 2`, generated for rotation `n` (its keeper); the other slot still holds rotation
`n - 1`'s key, untouched by the rotation, and is the old key (PREDCACHE_VALUE_HMAC_OLD_KEY) while
`predcache:valueHmacAcceptOldKey` is true. Raising the rotation by one regenerates only the slot whose
turn it is: the key it replaces stays readable until the old key is no longer accepted.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_random as random

from predcache_infra.config import StackConfig

KEY_LENGTH = 64  # characters of [A-Za-z0-9]: about 380 bits, more than SHA-256's block needs


@dataclass(frozen=True)
class ValueKeys:
    """The key values are written with, and the previous one when it is still accepted for reading."""

    current: random.RandomPassword
    old: random.RandomPassword | None


def create_value_keys(config: StackConfig, opts: pulumi.ResourceOptions) -> ValueKeys:
    rotation = config.value_hmac_key_rotation
    slots: dict[int, random.RandomPassword] = {}
    for slot, slot_rotation in ((rotation % 2, rotation), ((rotation - 1) % 2, rotation - 1)):
        if slot_rotation >= 0:  # before the first rotation the second slot has never held a key
            slots[slot] = random.RandomPassword(
                f"value-hmac-key-{slot}",
                length=KEY_LENGTH,
                special=False,
                keepers={"rotation": str(slot_rotation)},
                opts=opts,
            )
    old = slots.get((rotation - 1) % 2) if config.value_hmac_accept_old_key else None
    return ValueKeys(current=slots[rotation % 2], old=old)
