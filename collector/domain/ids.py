"""Event identifiers: UUIDv7 for new events (time-ordered, like Prefect's ``uuid7()``), and
deterministic UUIDs for events derived from another system's identity (retries dedupe)."""

from __future__ import annotations

import hashlib
import os
import time
import uuid


def uuid7() -> uuid.UUID:
    """A new RFC 9562 version-7 UUID: 48-bit Unix milliseconds, then random bits."""
    ms = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")
    value = (ms & ((1 << 48) - 1)) << 80
    value |= 0x7 << 76  # version
    value |= ((rand >> 62) & 0xFFF) << 64  # rand_a
    value |= 0b10 << 62  # variant
    value |= rand & ((1 << 62) - 1)  # rand_b
    return uuid.UUID(int=value)


def uuid7_str() -> str:
    return str(uuid7())


def uuid7_strs(n: int) -> list[str]:
    """``n`` new UUIDv7 strings (``str(uuid7())`` each) for one batch: one ``os.urandom`` call
    and text slicing instead of a syscall and a ``UUID`` object per id (0.7 vs 3.5 µs an id
    here). They share the millisecond the batch started in; the 74 random bits are per id."""
    ms = time.time_ns() // 1_000_000
    t = f"{ms & ((1 << 48) - 1):012x}"
    head = f"{t[:8]}-{t[8:]}-7"
    pool = os.urandom(10 * n).hex()  # 20 hex digits per id, 19 used (74 random bits)
    return [
        # rand_a (12 bits) - the variant (0b10) and 2 random bits, then 12 - rand_b's other 48
        f"{head}{r[:3]}-{_VARIANT[int(r[3], 16) & 3]}{r[4:7]}-{r[7:19]}"
        for r in (pool[i : i + 20] for i in range(0, 20 * n, 20))
    ]


_VARIANT = "89ab"


def derived_uuid(*parts: bytes) -> str:
    """A version-8 UUID that is a stable hash of ``parts``: the same input gives the same id."""
    digest = bytearray(hashlib.blake2b(b"\x1f".join(parts), digest_size=16).digest())
    digest[6] = (digest[6] & 0x0F) | 0x80  # version 8 (custom)
    digest[8] = (digest[8] & 0x3F) | 0x80  # RFC variant
    return str(uuid.UUID(bytes=bytes(digest)))
