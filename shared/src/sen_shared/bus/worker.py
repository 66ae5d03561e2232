"""The worker process of a service: its consumers and its outbox relay.

``python -m sen_<svc>.worker`` calls :func:`run_worker` with the handlers of
the consumer purposes it owns (keys of the catalog's ``consumers``) and the
collections that carry an outbox (a FHIR resource type there means its
``<Type>_history`` collection: fhir/store.py's ``relay_targets``). Each consumer runs in its own thread on its
own connection and reconnects after a broker restart; the relay runs in one
more thread with its own publisher. SIGTERM or SIGINT (or ``stop``) ends
them: a message being handled is finished and acked first. A signal sent again while
stopping (``run.sh``'s trap after the group's signal) changes nothing (:class:`SignalStop`).
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Mapping, Sequence
from typing import Any

from .. import mongo
from ..config import Settings
from .catalog import Catalog, load_catalog
from .consumer import EventConsumer, Handler
from .errors import BusUnavailable
from .outbox import OutboxRelay
from .publisher import Publisher
from .topology import Topology

log = logging.getLogger("sen.bus.worker")


class SignalStop:
    """SIGTERM/SIGINT set ``stop``, however often and whenever they arrive.

    A Python signal handler runs on the main thread between two bytecodes, possibly inside
    ``stop.set()`` or ``stop.wait()`` while they hold the Event's lock, which is not reentrant: a
    handler calling ``stop.set()`` itself hung there for good when a second signal came in the middle
    of the first one's ``set``. So :meth:`handler` only writes the signal's number to a pipe (no lock,
    never blocks); a thread of its own reads it, logs it and sets ``stop``."""

    def __init__(self, stop: threading.Event) -> None:
        self._stop = stop
        self._read, self._write = os.pipe()
        os.set_blocking(self._write, False)
        self._restore: dict[int, Any] = {}
        self._thread = threading.Thread(target=self._watch, name="stop-signals", daemon=True)
        self._thread.start()

    def handler(self, signum: int, frame: object) -> None:
        try:
            os.write(self._write, bytes([signum]))
        except OSError:  # the pipe full (stop is on its way already) or closed (the worker has ended)
            pass

    def install(self, signals: Sequence[int] = (signal.SIGTERM, signal.SIGINT)) -> None:
        """Make :meth:`handler` the handler of ``signals`` (main thread only), until :meth:`close`."""
        for sig in signals:
            self._restore[sig] = signal.signal(sig, self.handler)

    def watching(self) -> bool:
        return self._thread.is_alive()

    def _watch(self) -> None:
        while True:
            try:
                data = os.read(self._read, 64)
            except OSError:
                return
            for signum in data:
                if signum == 0:  # close()
                    return
                log.info("stopping", extra={"signal": signum})
                self._stop.set()
            if not data:
                return

    def close(self) -> None:
        """The previous handlers back, the thread ended, the pipe closed."""
        for sig, previous in self._restore.items():
            signal.signal(sig, previous)
        self._restore.clear()
        try:
            os.write(self._write, b"\0")
        except OSError:
            pass
        self._thread.join(timeout=5)
        if self._write >= 0:
            os.close(self._write)
            os.close(self._read)
        self._write = self._read = -1


def _declare_until_ready(publisher: Publisher, stop: threading.Event) -> bool:
    delay = 0.5
    while not stop.is_set():
        try:
            publisher.declare()
            return True
        except BusUnavailable as err:
            log.warning("broker not ready, retrying", extra={"error": str(err)[:200], "retry_in": delay})
            stop.wait(delay)
            delay = min(delay * 2, 10.0)
    return False


def run_worker(settings: Settings, *, handlers: Mapping[str, Handler], outbox_collections: Sequence[str],
               stop: threading.Event | None = None, catalog: Catalog | None = None,
               poll_interval: float = 0.5, gates: Mapping[str, Any] | None = None) -> None:
    """Declare the topology, run the consumers and the outbox relay until stopped. ``gates``: the
    service's own relay gates by collection (beside the FHIR history gates), see ``outbox``."""
    stop = stop or threading.Event()
    catalog = catalog or load_catalog()
    for purpose in handlers:
        catalog.consumer(purpose)  # an unknown purpose is a configuration error: say so now
    db = mongo.database(settings.mongo_url, settings.db_name)
    publisher = Publisher(settings.amqp_url, prefix=settings.bus_prefix, catalog=catalog, validate=True)

    signals: SignalStop | None = None
    if threading.current_thread() is threading.main_thread():
        signals = SignalStop(stop)
        signals.install()

    threads: list[threading.Thread] = []
    try:
        if not _declare_until_ready(publisher, stop):
            return
        topology = Topology(catalog, settings.bus_prefix)
        for purpose, handler in handlers.items():
            consumer = EventConsumer(settings.amqp_url, topology, purpose, handler, db)
            threads.append(threading.Thread(target=consumer.run, args=(stop,), name=f"consumer:{purpose}",
                                            daemon=True))
        if outbox_collections:
            # a FHIR resource type stands for its history collection, where its versions' events
            # wait, with the gate that rolls a crashed write forward before its events go out
            from ..fhir.store import relay_targets

            collections, history_gates = relay_targets(db, outbox_collections)
            relay = OutboxRelay(db, publisher, collections, poll_interval=poll_interval,
                                gates={**history_gates, **(gates or {})})
            try:
                relay.ensure_indexes()
            except Exception as err:  # noqa: BLE001 - the relay works without its index, only slower
                log.warning("outbox index not ensured", extra={"error": type(err).__name__})
            threads.append(threading.Thread(target=relay.run_forever, args=(stop,), name="outbox-relay",
                                            daemon=True))
        for t in threads:
            t.start()
        log.info("worker started", extra={"consumers": sorted(handlers), "outbox": list(outbox_collections)})
        while not stop.wait(1.0):
            for t in threads:
                if not t.is_alive():  # the loops catch everything; a dead thread is a bug: stop loudly
                    log.error("worker thread died, stopping", extra={"worker_thread": t.name})
                    stop.set()
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=15)
        publisher.close()
        if signals is not None:
            signals.close()
        log.info("worker stopped")


def main(service: str, handlers: Mapping[str, Handler], outbox_collections: Sequence[str] = ()) -> int:
    """Convenience entry point: settings from the environment, JSON logs, run until signalled."""
    from ..config import load_settings
    from ..logs import setup_logging

    settings = load_settings(Settings, service=service)
    setup_logging(f"{service}-worker", settings.log_level)
    run_worker(settings, handlers=handlers, outbox_collections=outbox_collections)
    return 0
