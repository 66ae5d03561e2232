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
    Record("operation", "Invoice", None, status=403, operation="invoice-summaries", detail="another facility's",
           subjects=["Invoice/i-1", "Invoice/i-2", "Invoice/i-1"]),
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


# --------------------------------------------------------------------------- the narrowed index

SEARCHED = {"date", "agent", "altid", "agent-role", "subtype", "action", "entity", "patient", "outcome"}


def test_auditevent_is_indexed_only_for_what_tells_sens_events_apart():
    from sen_shared.fhir.search.definitions import params_for

    params = params_for("AuditEvent")
    assert {"site", "type", "source", "entity-type", "entity-role", "policy"} <= set(params)  # R4 defines them
    assert {c for c, p in params.items() if p.supported} == SEARCHED | {"_id", "_lastUpdated"}
    assert {c for c, p in params.items() if p.supported and p.sortable} == {"date", "_id", "_lastUpdated"}
    assert all(p.indexed and p.sortable for p in params_for("Patient").values())  # the other types: as R4


@pytest.mark.parametrize("principal", PRINCIPALS)
def test_an_auditevent_document_holds_only_the_searched_fields(principal):
    rec = Record("search", "Observation", query_params=["patient", "code"], count=2, patients=[P1, P2], status=200)
    doc = audit.to_document(build_event(principal, rec, service="ehr"))
    fields = {k for k in doc if k.startswith("sp_")}
    assert {"sp_subtype", "sp_outcome", "sp_patient", "sp_entity", "sp_date_lo"} <= fields
    assert not any(k.startswith(("sp_site", "sp_type", "sp_source", "sp_entity-type", "sp_entity-role",
                                 "sp_entity-name")) for k in fields)
    assert [k for k in fields if k.endswith("_s")] == ["sp_date_s"]


def test_a_search_or_sort_on_what_is_not_indexed_says_what_is():
    from sen_shared.fhir.search import SearchError, UnsupportedSearch, parse_search

    with pytest.raises(UnsupportedSearch, match="'site' is not indexed for AuditEvent; it is searched by action, "):
        parse_search("AuditEvent", [("site", "ehr")])
    lenient = parse_search("AuditEvent", [("site", "ehr"), ("subtype", "read")], lenient=True)
    assert [c.code for c in lenient.criteria] == ["subtype"]
    with pytest.raises(SearchError, match="cannot sort AuditEvent by 'outcome'; it sorts by _id, _lastUpdated, date"):
        parse_search("AuditEvent", [("_sort", "outcome")])
    assert [(k.code, k.descending) for k in parse_search("AuditEvent", [("_sort", "-date")]).sort] == [("date", True)]
    assert parse_search("Patient", [("_sort", "family")]).sort[0].code == "family"


def test_the_resources_an_interaction_was_on_are_its_entities_each_once():
    """``Record.subjects``: each names an entity as ``rid`` does (what, domain resource), in place of the
    type's query entity; ``AuditEvent?entity=`` finds the event by any of them."""
    event = build_event(PRINCIPALS[1], RECORDS[-1], service="billing")
    assert [(e["what"]["reference"], e["type"]["code"], e["role"]["code"]) for e in event["entity"]] == [
        ("Invoice/i-1", "2", "4"), ("Invoice/i-2", "2", "4")]
    single = build_event(PRINCIPALS[1], Record("read", "Invoice", "i-1", status=403), service="billing")
    assert single["entity"] == event["entity"][:1]
    assert {"Invoice/i-1", "Invoice/i-2"} <= set(index_fields(event)["sp_entity"])
