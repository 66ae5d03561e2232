"""Random ids: well-formed, unique, and different in a forked child."""

from __future__ import annotations

import os
import uuid

from sen_shared.ids import new_hex, new_uuid


def test_uuid_shape_and_uniqueness() -> None:
    ids = [new_uuid() for _ in range(50_000)]
    assert len(set(ids)) == len(ids)
    parsed = uuid.UUID(ids[0])
    assert str(parsed) == ids[0] and parsed.version == 4 and parsed.variant == uuid.RFC_4122
    h = new_hex(16)
    assert len(h) == 32 and int(h, 16) >= 0 and len(new_hex(4)) == 8


def test_a_forked_child_draws_other_ids() -> None:
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: as a gunicorn worker forked from its master
        os.write(w, new_uuid().encode())
        os._exit(0)
    os.close(w)
    os.waitpid(pid, 0)
    child = os.read(r, 64).decode()
    os.close(r)
    assert child != new_uuid() and uuid.UUID(child).version == 4


def test_seeding_the_random_module_does_not_repeat_ids() -> None:
    import random

    random.seed(7)
    first = new_uuid()
    random.seed(7)
    assert new_uuid() != first
