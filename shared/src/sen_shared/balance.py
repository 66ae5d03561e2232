"""Keep the keep-alive connections of a service's gunicorn workers even.

Gunicorn's workers accept from one shared socket, and a connection stays with the worker that
accepted it. Clients that open their connections together (a pool, a load balancer, the bench's 16)
are split by who woke first: 10 and 6, 9 and 7. Each worker serves its own connections one after
another, so the fuller worker's clients wait longer: at 16 clients on 2 workers, 9 against 7 gave
medians of 23.5 and 18 ms, and the fuller worker set the p99.

:class:`BalancedUvicornWorker` publishes how many connections each worker holds in a small
shared-memory table the gunicorn master made before forking (one slot per worker). A worker that
holds two or more connections than the emptiest live worker answers one request with
``Connection: close`` (at most one every :data:`CLOSE_EVERY` seconds); the client reconnects (every
HTTP/1.1 client does) and its new connection goes to whichever worker accepts first, most often the
idle one. The table only counts; no request waits on it.

Off with ``SEN_BALANCE_CONNECTIONS=0``, and inert with one worker or outside gunicorn.
"""

from __future__ import annotations

import asyncio
import mmap
import os
import struct
import sys
import time
from typing import Any

from gunicorn.arbiter import Arbiter
from uvicorn.server import Server
from uvicorn_worker import UvicornWorker

from .coalesce import CoalescingHttpToolsProtocol

EMPTY = -1  # a slot no live worker holds
CLOSE_EVERY = 0.05  # seconds between two closes by one worker
PUBLISH_EVERY = 0.1  # seconds between two counts an idle worker publishes
EXCESS = 2  # how many connections more than the emptiest worker make a worker close one
_INT = struct.Struct("i")


class Table:
    """Connection counts of the workers, in memory shared across ``fork`` (an anonymous mapping)."""

    def __init__(self, slots: int) -> None:
        self.slots = slots
        self._mem = mmap.mmap(-1, _INT.size * slots)
        for i in range(slots):
            self.set(i, EMPTY)

    def set(self, slot: int, count: int) -> None:
        _INT.pack_into(self._mem, slot * _INT.size, count)

    def get(self, slot: int) -> int:
        return _INT.unpack_from(self._mem, slot * _INT.size)[0]

    def others_min(self, slot: int) -> int | None:
        """The fewest connections a live worker other than ``slot`` holds (None: no other worker)."""
        counts = [c for i in range(self.slots) if i != slot and (c := self.get(i)) != EMPTY]
        return min(counts) if counts else None


def enabled() -> bool:
    return os.environ.get("SEN_BALANCE_CONNECTIONS", "1").strip().lower() not in {"0", "false", "no", "off"}


# --------------------------------------------------------------------------- master side (gunicorn hooks)

_table: Table | None = None


def master_start(workers: int) -> None:
    """In the gunicorn master before any fork: the table, room for a replacement of each worker."""
    global _table  # noqa: PLW0603 - one table per master, inherited by its forks
    _table = Table(max(2, workers * 2)) if enabled() and workers > 1 else None


def assign_slot(server: Any, worker: Any) -> None:
    """In the master before forking ``worker``: a slot no live worker holds."""
    if _table is None:
        return
    taken = {getattr(w, "sen_slot", None) for w in server.WORKERS.values()}
    worker.sen_slot = next((i for i in range(_table.slots) if i not in taken), None)
    if worker.sen_slot is not None:
        _table.set(worker.sen_slot, EMPTY)


def release_slot(worker: Any) -> None:
    """In the master after ``worker`` died: its slot counts nothing."""
    slot = getattr(worker, "sen_slot", None)
    if _table is not None and slot is not None:
        _table.set(slot, EMPTY)


# --------------------------------------------------------------------------- worker side

class _Balancer:
    def __init__(self, table: Table, slot: int, server: Server) -> None:
        self.table, self.slot, self.server = table, slot, server
        self.last_close = 0.0

    def count(self) -> int:
        n = len(self.server.server_state.connections)
        self.table.set(self.slot, n)
        return n

    def should_close(self) -> bool:
        mine = self.count()
        fewest = self.table.others_min(self.slot)
        if fewest is None or mine < fewest + EXCESS:
            return False
        now = time.monotonic()
        if now - self.last_close < CLOSE_EVERY:
            return False
        self.last_close = now
        self.table.set(self.slot, mine - 1)  # the closing one: others see it gone at once
        return True

    async def publish(self) -> None:
        while True:
            self.count()
            await asyncio.sleep(PUBLISH_EVERY)


_balancer: _Balancer | None = None


def should_close() -> bool:
    """Whether the response being sent should close its connection (this worker holds too many)."""
    return _balancer is not None and _balancer.should_close()


class BalancedUvicornWorker(UvicornWorker):
    """``uvicorn_worker.UvicornWorker`` that publishes its connection count (see the module) and
    writes each answer with one system call (:mod:`sen_shared.coalesce`)."""

    CONFIG_KWARGS: dict[str, Any] = {"loop": "auto", "http": CoalescingHttpToolsProtocol}  # one write per answer

    async def _serve(self) -> None:
        global _balancer  # noqa: PLW0603 - one balancer per worker process
        slot = getattr(self, "sen_slot", None)
        if _table is None or slot is None:
            await super()._serve()
            return
        self.config.app = self.wsgi
        server = Server(config=self.config)
        _balancer = _Balancer(_table, slot, server)
        publisher = asyncio.get_running_loop().create_task(_balancer.publish())
        self._install_sigquit_handler()
        try:
            await server.serve(sockets=self.sockets)
        finally:
            publisher.cancel()
            _table.set(slot, EMPTY)
        if not server.started:
            sys.exit(Arbiter.WORKER_BOOT_ERROR)
