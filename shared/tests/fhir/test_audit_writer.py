"""The background AuditEvent writer: batches, loses nothing, answers flush, pushes back when full."""

from __future__ import annotations

import threading
import time

from sen_shared.fhir import audit
from sen_shared.fhir.audit import AuditWriter


def test_events_are_stored_in_batches_and_flush_waits_for_them() -> None:
    calls: list[int] = []
    stored: list[int] = []

    def insert(docs):
        time.sleep(0.005)  # a database round trip
        calls.append(len(docs))
        stored.extend(d["n"] for d in docs)

    w = AuditWriter(insert)
    threads = [threading.Thread(target=lambda k=k: [w.put({"n": k * 100 + i}) for i in range(100)]) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert w.flush(timeout=10)
    assert sorted(stored) == [k * 100 + i for k in range(4) for i in range(100)]  # each once
    assert len(calls) < 400 / 4  # gathered, not one insert per event


def test_a_database_that_fails_for_a_while_gets_the_events_afterwards(monkeypatch) -> None:
    attempts: list[int] = []
    stored: list[int] = []

    def insert(docs):
        attempts.append(len(docs))
        if len(attempts) <= 2:  # a FerretDB restart: refused twice
            raise ConnectionError("connection refused")
        stored.extend(d["n"] for d in docs)

    w = AuditWriter(insert)
    w.put({"n": 7, "_id": "a"})
    assert w.flush(timeout=10) and stored == [7] and len(attempts) == 3


def test_a_database_that_stays_down_is_given_up_on_and_the_writer_goes_on(monkeypatch, caplog) -> None:
    monkeypatch.setattr(audit, "RETRY_SECONDS", 0.5)
    seen: list[int] = []

    def insert(docs):
        if any(d["n"] == 0 for d in docs):
            raise RuntimeError("boom")
        seen.extend(d["n"] for d in docs)

    w = AuditWriter(insert)
    w.put({"n": 0, "_id": "x"})
    assert w.flush(timeout=5)
    assert any("audit events not stored" in r.getMessage() for r in caplog.records)  # said loudly, not silently
    w.put({"n": 1, "_id": "y"})
    assert w.flush(timeout=5) and seen == [1]


def test_a_full_queue_makes_the_caller_store_its_event(monkeypatch) -> None:
    monkeypatch.setattr(audit, "QUEUE_CAPACITY", 1)
    gate, stuck = threading.Event(), threading.Event()
    by: list[str] = []

    def insert(docs):
        if threading.current_thread().name == "sen-audit-writer":
            stuck.set()
            gate.wait(5)  # the writer is stuck on a slow database
        by.extend(threading.current_thread().name for _ in docs)

    w = AuditWriter(insert)
    w.put({"n": 1})  # taken by the writer, which blocks
    assert stuck.wait(30)  # (not a fixed pause: a busy machine may start the writer late)
    w.put({"n": 2})  # fills the queue
    w.put({"n": 3})  # no room: stored by this thread
    assert by == ["MainThread"]
    gate.set()
    assert w.flush(timeout=5) and sorted(by) == ["MainThread", "sen-audit-writer", "sen-audit-writer"]


def test_the_writer_wakes_once_a_batch_not_once_an_event(monkeypatch) -> None:
    """Events put while the writer gathers do not wake it (each wake took the GIL from a request)."""
    monkeypatch.setattr(audit, "MAX_BATCH", 10)
    batches: list[int] = []
    w = AuditWriter(lambda docs: batches.append(len(docs)))
    w.put({"n": -1})
    assert w.flush(timeout=5)
    waits = 0
    get = w._queue.get

    def counting_get(*args, **kwargs):
        nonlocal waits
        waits += kwargs.get("block", args[0] if args else True)  # get_nowait() is get(block=False)
        return get(*args, **kwargs)

    monkeypatch.setattr(w._queue, "get", counting_get)
    batches.clear()
    for i in range(35):
        w.put({"n": i})
    assert w.flush(timeout=5)
    assert sum(batches) == 35 and max(batches) <= 10  # a batch holds at most MAX_BATCH
    assert waits <= len(batches) + 1  # one blocking wait a batch (the pending one included)


def test_the_writer_thread_builds_the_documents_and_skips_one_it_cannot_build(caplog) -> None:
    stored: list[tuple[int, str]] = []

    def prepare(item):
        if item == 3:
            raise ValueError("an audit bug")
        return {"n": item, "thread": threading.current_thread().name}

    w = AuditWriter(lambda docs: stored.extend((d["n"], d["thread"]) for d in docs), prepare=prepare)
    for i in range(6):
        w.put(i)
    assert w.flush(timeout=10)
    assert sorted(stored) == [(i, "sen-audit-writer") for i in (0, 1, 2, 4, 5)]
    assert "audit event not built" in caplog.text


def test_a_web_auditor_hands_the_event_to_the_writer_unbuilt(monkeypatch) -> None:
    from types import SimpleNamespace

    built: list[str] = []
    stored: list[dict] = []
    real = audit.to_document
    monkeypatch.setattr(audit, "to_document", lambda event, when=None: (
        built.append(threading.current_thread().name), real(event, when))[1])
    auditor = audit.Auditor(object(), "ehr", background=True)
    monkeypatch.setattr(auditor, "_store", lambda docs: stored.extend(docs))
    auditor.writer._insert = auditor._store  # the patched store
    principal = SimpleNamespace(roles=["admin"], practitioner=None, sub="a", facility=None)
    auditor.record(principal, audit.Record("read", "Patient", "p1", patients=["Patient/p1"], status=200))
    auditor.flush()
    assert built == ["sen-audit-writer"]
    assert [d["sp_patient"] for d in stored] == [["Patient/p1", "p1"]]
