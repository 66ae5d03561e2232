"""Random ids for resources, events and requests, without a system call per id.

``uuid.uuid4()`` reads the kernel's random source on every call, which under load on a
small virtual machine showed as a sixth of a transaction's time. Ids need to be unique,
not secret (access control protects the data behind them), so they come from the
process's Mersenne Twister, which Python seeds from the kernel at start and again in
every forked child.
"""

from __future__ import annotations

import random
import uuid

_bits = random.getrandbits


def new_uuid() -> str:
    """A version 4 UUID string (``8-4-4-4-12`` hex)."""
    return str(uuid.UUID(int=_bits(128), version=4))


def new_hex(nbytes: int = 16) -> str:
    """``2 * nbytes`` random hex digits."""
    return f"{_bits(nbytes * 8):0{nbytes * 2}x}"


__all__ = ["new_hex", "new_uuid"]
