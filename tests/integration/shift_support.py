"""What the cashier-shift suites share: a cashier of a facility, as a token names them, and a shift's
closed link as its close wrote it."""

from __future__ import annotations

import uuid
from types import SimpleNamespace

from sen_billing.domain import shifts


def cashier(facility: str = "org-a", name: str = "Lê Thị Thu") -> SimpleNamespace:
    """A cashier of ``facility`` (a new subject each call: a chain of shifts of their own)."""
    return SimpleNamespace(roles={"cashier"}, facility=facility, sub=f"thu-ngan-{uuid.uuid4().hex[:6]}", name=name)


def closed_link(db, shift_id: str) -> dict:  # noqa: ANN001 - the test database
    """The ``closed`` link of a shift (its counted ids, its figures as its close wrote them)."""
    return db[shifts.SHIFTS].find_one({"shift": shift_id, "state": "closed"})
