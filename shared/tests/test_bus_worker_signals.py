"""The bus worker's stop signals (review 6): a worker sent SIGTERM or SIGINT again while it is
already stopping still stops.

``run.sh`` stopped by ``kill -TERM -- -<pgid>`` (or Ctrl-C) signals every process twice: the
group's signal, then its own trap's TERM. The handler used to call ``stop.set()``: a Python signal
handler runs on the main thread between two bytecodes, so a second signal arriving while the first
handler (or the main loop's ``stop.wait``) held the Event's non-reentrant lock re-entered it and
hung there for good. No server is needed: the worker waits for a broker that is never there.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

from sen_shared.bus.worker import SignalStop

CHILD = """
import logging, sys, threading, time
from sen_shared.bus.worker import run_worker
from sen_shared.config import Settings

class SlowToSet(threading.Event):
    # the few microseconds Event.set holds its lock, made half a second wide: a signal sent meanwhile lands inside
    def set(self):
        with self._cond:
            time.sleep(0.5)
            self._flag = True
            self._cond.notify_all()

logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(message)s")
run_worker(Settings(service="signals"), handlers={}, outbox_collections=[], stop=SlowToSet())
"""
# a refused port: the worker retries its broker until stopped, signal handlers in place
ENV = {"MONGO_URL": "mongodb://127.0.0.1:9/?serverSelectionTimeoutMS=200", "AMQP_URL": "amqp://guest:guest@127.0.0.1:9//",
       "SEN_JWKS_URL": "http://127.0.0.1:9/jwks"}


def _worker() -> tuple[subprocess.Popen[str], list[str]]:
    proc = subprocess.Popen([sys.executable, "-c", CHILD], env={**os.environ, **ENV}, stderr=subprocess.PIPE,
                            stdout=subprocess.DEVNULL, text=True)
    lines: list[str] = []
    waiting = threading.Event()

    def read() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            lines.append(line)
            if "broker not ready" in line:
                waiting.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    deadline = time.monotonic() + 60
    while not waiting.wait(0.1) and reader.is_alive() and time.monotonic() < deadline:
        pass
    if not waiting.is_set():
        proc.kill()
        raise AssertionError(f"the worker did not start waiting for its broker: {''.join(lines)[-2000:]}")
    return proc, lines


def test_a_worker_signalled_twice_stops_gracefully() -> None:
    """SIGTERM then SIGTERM again (run.sh's group kill, then its trap), or SIGINT then SIGTERM
    (Ctrl-C in ``make run``), the second arriving while the first is being handled."""
    for first, gap in ((signal.SIGTERM, 0.01), (signal.SIGINT, 0.02), (signal.SIGTERM, 0.03)):
        proc, lines = _worker()
        os.kill(proc.pid, first)
        time.sleep(gap)
        os.kill(proc.pid, signal.SIGTERM)
        try:
            code = proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise AssertionError(f"the worker hung after {first.name} and SIGTERM {gap}s apart") from None
        assert code == 0, "".join(lines)[-2000:]
        assert lines[-1].startswith("worker stopped") and any(line.startswith("stopping") for line in lines)


def test_the_handler_never_blocks_even_inside_the_events_lock() -> None:
    """What a signal landing inside ``stop.set()`` or ``stop.wait()`` does: the handler runs while
    the Event's lock is held by the very thread it interrupted. It must return at once; ``stop``
    is set just after, by the watcher thread."""
    stop = threading.Event()
    signals = SignalStop(stop)
    try:
        done = threading.Event()

        def interrupted_inside_set() -> None:
            with stop._cond:  # held, as inside Event.set/Event.wait on the interrupted thread
                signals.handler(signal.SIGTERM, None)
                signals.handler(signal.SIGINT, None)  # and again, re-entered
            done.set()

        threading.Thread(target=interrupted_inside_set, daemon=True).start()
        assert done.wait(30), "the signal handler blocked on the Event's lock"
        assert stop.wait(30)
    finally:
        signals.close()
    signals.handler(signal.SIGTERM, None)  # a late call after close is harmless
    deadline = time.monotonic() + 30
    while signals.watching() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not signals.watching()


def test_the_handlers_are_installed_until_closed() -> None:
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    signals = SignalStop(threading.Event())
    signals.install()
    try:
        assert signal.getsignal(signal.SIGTERM) == signals.handler == signal.getsignal(signal.SIGINT)
    finally:
        signals.close()
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before
    assert not signals.watching()
