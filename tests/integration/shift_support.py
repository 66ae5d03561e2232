"""What the cashier-shift suites share: a cashier of a facility, as a token names them, a shift's closed link
as its close wrote it, and money recorded racing a shift's close."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace
from typing import Any

from sen_billing.domain import shifts


def cashier(facility: str = "org-a", name: str = "Lê Thị Thu") -> SimpleNamespace:
    """A cashier of ``facility`` (a new subject each call: a chain of shifts of their own)."""
    return SimpleNamespace(roles={"cashier"}, facility=facility, sub=f"thu-ngan-{uuid.uuid4().hex[:6]}", name=name)


def closed_link(db, shift_id: str) -> dict:  # noqa: ANN001 - the test database
    """The ``closed`` link of a shift (its counted ids, its figures as its close wrote them)."""
    return db[shifts.SHIFTS].find_one({"shift": shift_id, "state": "closed"})


def race_with_close(db, thu: SimpleNamespace, actions: list[Callable[[], Any]], before: int) -> list[Any]:  # noqa: ANN001
    """Run ``actions`` (each recording money) and ``thu``'s shift close started together (a barrier); the close
    is let go once ``before`` of them have finished, the others racing it. The actions' results, in order."""
    gate, lock, done, enough = threading.Barrier(len(actions) + 1), threading.Lock(), [0], threading.Event()
    if before == 0:
        enough.set()

    def run(action: Callable[[], Any]) -> Any:
        gate.wait()
        result = action()
        with lock:
            done[0] += 1
            if done[0] >= before:
                enough.set()
        return result

    def close() -> None:
        gate.wait()
        assert enough.wait(60)
        shifts.close_shift(db, thu, 0, 0, note="đua")

    with ThreadPoolExecutor(len(actions) + 1) as pool:
        futures = [pool.submit(run, a) for a in actions] + [pool.submit(close)]
        return [f.result() for f in futures][:-1]
