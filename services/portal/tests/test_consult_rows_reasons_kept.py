# ruff: noqa: F811 - the client fixture imported from test_pages is a parameter by name
"""A list's rows of consults (``clinic.consult_rows``: the worklist, the clinic's list): the reasons not kept yet
are one teleconsult search while the patients' names are read beside it (a pool's thread); with every reason kept
(the list read again within ``REASON_SECONDS``) the names are read alone, in the request's thread, and the rows are
the same: each Task's patient, reason and requester."""

from __future__ import annotations

from typing import Any

from services.portal.tests.test_pages import client  # noqa: F401 - the fixture by name


def test_the_rows_are_the_same_with_the_reasons_kept_or_read(client, monkeypatch):
    from sen_portal.web import clinic
    from sen_portal.web import patients as patient_module

    asked: list[tuple[str, str]] = []

    def bundle(resources: list[dict[str, Any]]) -> dict[str, Any]:
        return {"resourceType": "Bundle", "type": "searchset", "entry": [{"resource": r} for r in resources]}

    def fhir_get(service, path, params=None, **_kw):
        ids = str((params or {}).get("_id") or "").split(",")
        asked.append((path, ",".join(ids)))
        if (service, path) == ("teleconsult", "/fhir/ServiceRequest"):
            return bundle([{"resourceType": "ServiceRequest", "id": i, "reasonCode": [{"text": f"Lý do {i}"}],
                            "requester": {"reference": "Organization/tyt-my-hiep"}} for i in ids])
        if (service, path) == ("ehr", "/fhir/Patient"):
            return bundle([{"resourceType": "Patient", "id": i, "name": [{"family": "Lê", "given": [i]}]} for i in ids])
        raise AssertionError(path)

    for module in (clinic, patient_module):
        monkeypatch.setattr(module, "fhir_get", fhir_get)
    monkeypatch.setattr(clinic, "_reasons_kept", {})
    submitted: list[Any] = []
    submit = clinic.pool.submit
    monkeypatch.setattr(clinic.pool, "submit", lambda *a, **k: submitted.append(a) or submit(*a, **k))

    def task(i: int) -> dict[str, Any]:
        return {"resourceType": "Task", "id": f"t{i}", "status": "requested", "for": {"reference": f"Patient/p{i}"},
                "focus": {"reference": f"ServiceRequest/sr{i}"}}

    def rows(tasks: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
        with client.application.test_request_context("/worklist"):
            from flask import g, session

            session["user"] = {"username": "doctor", "role": "doctor", "facility": "bvdk-dong-thap"}
            g.user = None
            return [(r["task"]["id"], r["patient"] and r["patient"].name, r["reason"], r["requester"])
                    for r in clinic.consult_rows(tasks)]

    first = rows([task(1), task(2)])
    assert sorted(p for p, _ in asked) == ["/fhir/Patient", "/fhir/ServiceRequest"]
    assert ("/fhir/ServiceRequest", "sr1,sr2") in asked and len(submitted) == 1  # the names beside the search
    assert [(tid, reason) for tid, _, reason, _ in first] == [("t1", {"text": "Lý do sr1"}),
                                                              ("t2", {"text": "Lý do sr2"})]
    assert all(name for _, name, _, _ in first)

    asked.clear()
    again = rows([task(1), task(2)])  # every reason kept: the names alone, no thread
    assert asked == [("/fhir/Patient", "p1,p2")] and len(submitted) == 1
    assert again == first

    asked.clear()
    more = rows([task(1), task(3)])  # one reason kept, one read
    assert ("/fhir/ServiceRequest", "sr3") in asked and len(submitted) == 2
    assert more == [first[0], ("t3", more[1][1], {"text": "Lý do sr3"}, {"reference": "Organization/tyt-my-hiep"})]
