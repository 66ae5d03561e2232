"""Issue 14: 'Idempotency-Key on every state-changing request'. Every POST, PUT, PATCH and DELETE of the
teleconsult spec (its own operations and the shared FHIR interactions merged in) is handled through
``sen_shared.idempotency_key.idempotent``, but for the few that change nothing: reads sent as POST
($find, _search, $validate), the Slot writes that are always 405 (slots are derived), and the index step.
A new operation added without the decorator fails here (the behaviour itself: the integration tests of
$submit, $accept, $book and $message under one key)."""

from __future__ import annotations

import importlib

from sen_shared.idempotency_key import idempotent
from sen_shared.web import load_spec

CHANGES_NOTHING = {
    ("post", "/fhir/Appointment/$find"), ("post", "/fhir/{type}/_search"), ("post", "/fhir/{type}/$validate"),
    ("post", "/fhir/{type}/{id}/$validate"), ("post", "/admin/indexes"),
    ("post", "/fhir/Slot"), ("put", "/fhir/Slot/{id}"), ("delete", "/fhir/Slot/{id}"),
}
KEYED = idempotent()(lambda: None).__code__  # the decorator's wrapper, the same code whatever it wraps


def _takes_a_key(fn) -> bool:
    while fn is not None:
        if getattr(fn, "__code__", None) is KEYED:
            return True
        fn = getattr(fn, "__wrapped__", None)
    return False


def _handler(operation_id: str):
    full = operation_id if operation_id.startswith("sen_shared.") else f"sen_teleconsult.api.{operation_id}"
    module, _, name = full.rpartition(".")
    return getattr(importlib.import_module(module), name)


def test_every_state_changing_operation_honours_idempotency_key() -> None:
    changing, missing = [], []
    for path, item in load_spec("teleconsult.yaml")["paths"].items():
        for method in ("post", "put", "patch", "delete"):
            if method not in item or (method, path) in CHANGES_NOTHING:
                continue
            changing.append((method, path))
            if not _takes_a_key(_handler(item[method]["operationId"])):
                missing.append(f"{method.upper()} {path}")
    assert len(changing) >= 20  # the Task steps, the Appointment operations, the FHIR writes, the transaction
    assert missing == []


def test_the_reads_sent_as_post_are_still_in_the_spec() -> None:
    """The exceptions above name operations that exist (a renamed path would silently escape the check)."""
    paths = load_spec("teleconsult.yaml")["paths"]
    assert all(method in paths.get(path, {}) for method, path in CHANGES_NOTHING)
