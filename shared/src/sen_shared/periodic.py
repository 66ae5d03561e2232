"""Periodic jobs of a worker process: each in a daemon thread, every ``interval`` seconds, until
``stop`` is set. A failed round is logged and retried at the next one (the database may be away).

Deliberately small: a thread and ``Event.wait`` per job, no scheduler. Each job must be safe to
run in several worker replicas at once (they claim their effects by insert, sen_shared.claims).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

log = logging.getLogger("sen.periodic")

Job = Callable[[], Any]
S = TypeVar("S")
# a worker's jobs: name -> (interval in seconds from the settings, job factory)
Table = Mapping[str, tuple[Callable[[S], float], Callable[[S], Job]]]


def _loop(name: str, interval: float, job: Job, stop: threading.Event) -> None:
    while not stop.wait(interval):
        try:
            done = job()
            if done:
                log.info("periodic job done", extra={"job": name, "count": done})
        except Exception:  # noqa: BLE001 - retried next round; the database may be away
            log.exception("periodic job failed", extra={"job": name})


def start_periodic(jobs: Mapping[str, tuple[float, Job]], stop: threading.Event) -> list[threading.Thread]:
    """Start one thread per ``name -> (interval seconds, job)``; they end when ``stop`` is set."""
    threads = []
    for name, (interval, job) in jobs.items():
        t = threading.Thread(target=_loop, args=(name, interval, job, stop), name=f"periodic:{name}", daemon=True)
        t.start()
        threads.append(t)
    return threads


def start_table(table: Table[S], settings: S, stop: threading.Event) -> list[threading.Thread]:
    """:func:`start_periodic` of a worker's ``table``, its intervals and jobs made from ``settings``."""
    return start_periodic({name: (interval(settings), factory(settings))
                           for name, (interval, factory) in table.items()}, stop)


__all__ = ["Table", "start_periodic", "start_table"]
