"""event_index: the AuditEvent index computed in two parts equals the generic extraction."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime
from types import SimpleNamespace

import pytest
from sen_shared.fhir import audit
from sen_shared.fhir.audit import Record, build_event, event_index
from sen_shared.fhir.search.extract import index_fields

PRINCIPALS = [
    SimpleNamespace(roles=["admin"], practitioner=None, sub="admin-1", facility=None),
    SimpleNamespace(roles=["doctor"], practitioner="pr-7", sub="bs.lan", facility="org-hub"),
    SimpleNamespace(roles=["clinic_staff", "nurse"], practitioner=None, sub="dd.hoa", facility="org-tram-3"),
    SimpleNamespace(roles=[], practitioner=None, sub="", facility=None),
]
P1, P2 = "Patient/1f0c", "Patient/9a2b"
RECORDS = [
    Record("read", "Patient", "1f0c", patients=[P1], status=200),
    Record("vread", "Observation", "o-1", vid="3", patients=[P2], status=200),
    Record("read", "Patient", "gone", status=410, detail="Patient/gone was deleted"),
    Record("search", "Observation", query_params=["patient", "code"], count=2, patients=[P1, P2], status=200),
    Record("search", None, query_params=[], count=0, status=400, detail="unknown parameter foo"),
    Record("everything", "Patient", "1f0c", patients=[P1], status=200, operation="everything"),
    Record("create", "Encounter", "e-9", patients=[P2], status=201),
    Record("transaction", None, patients=[P1, P2], status=500),
    Record("delete", "Condition", "c-2", patients=[P1], status=204),
]


@pytest.mark.parametrize("principal, rec", list(itertools.product(PRINCIPALS, RECORDS)))
def test_the_two_part_index_equals_the_whole_extraction(principal, rec):
    for when in (datetime(2026, 11, 22, 21, 5, 7, 123000, tzinfo=UTC), datetime(2025, 1, 1, tzinfo=UTC)):
        event = build_event(principal, rec, service="ehr", when=when)
        event["id"] = "a-1"
        event["meta"] = {"versionId": "1", "lastUpdated": event["recorded"]}
        assert event_index(event) == index_fields(event)


def test_the_repeating_part_is_extracted_once(monkeypatch):
    audit._fixed_index.clear()
    calls: list[dict] = []
    monkeypatch.setattr(audit, "index_fields", lambda r: calls.append(r) or index_fields(r))
    for rid in ("a", "b", "c"):
        event_index(build_event(PRINCIPALS[1], Record("read", "Patient", rid, patients=[f"Patient/{rid}"],
                                                      status=200), service="ehr"))
    assert len(calls) == 4  # the fixed part once, the entities and date of each event


def test_a_parameter_fed_by_both_parts_gets_the_whole_event():
    """``patient`` reads agent.who and entity.what: an agent that is a Patient feeds it from the fixed part."""
    event = build_event(PRINCIPALS[0], Record("read", "Patient", "1f0c", patients=[P1], status=200), service="ehr")
    event["agent"][0]["who"] = {"reference": P2}
    assert event_index(event) == index_fields(event)
    assert sorted(event_index(event)["sp_patient"]) == sorted(index_fields(event)["sp_patient"])
