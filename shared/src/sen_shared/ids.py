"""Random ids for resources, events and requests, without a system call per id.

``uuid.uuid4()`` reads the kernel's random source on every call, which under load on a
small virtual machine showed as a sixth of a transaction's time. Ids need to be unique,
not secret (access control protects the data behind them), so they come from a
Mersenne Twister of this module's own, seeded from the kernel at start and again in
every forked child. Not the ``random`` module's shared one: code that seeds that for
its own reasons (hypothesis does, for each example it runs) would make ids repeat.
"""

from __future__ import annotations

import os
import random
import uuid

_rng = random.Random()  # noqa: S311 - unique, not secret (above); seeded from the kernel
os.register_at_fork(after_in_child=_rng.seed)  # a gunicorn worker draws other ids than its master
_bits = _rng.getrandbits


def new_uuid() -> str:
    """A version 4 UUID string (``8-4-4-4-12`` hex)."""
    return str(uuid.UUID(int=_bits(128), version=4))


def new_hex(nbytes: int = 16) -> str:
    """``2 * nbytes`` random hex digits."""
    return f"{_bits(nbytes * 8):0{nbytes * 2}x}"


__all__ = ["new_hex", "new_uuid"]
