"""The requesting clinic's district as teleconsult reads it from the EHR (adapters.ehr.EhrClient.district_of)."""

from __future__ import annotations

import json

import pytest
from sen_shared import http
from sen_shared.bus import make_event
from sen_teleconsult.adapters import ehr


@pytest.mark.parametrize(("district", "kept"), [("Huyện Tháp Mười", True), ("H" * 200, True), ("H" * 201, False)])
def test_a_clinics_district_the_events_cannot_carry_is_none(monkeypatch, district, kept):
    """Every event of the clinic's consults carries its district (at most 200 characters in their schemas): a
    longer one made each of them fail its schema in the outbox, the consults never reaching billing or the
    EHR. It is read as no district; one up to the limit is kept whole and its event is valid."""
    org = {"resourceType": "Organization", "id": f"tyt-{len(district)}", "address": [{"district": district}]}
    monkeypatch.setattr(http, "request", lambda *a, **k: http.Response(200, {}, json.dumps(org).encode()))
    found = ehr.EhrClient("http://ehr.invalid", 1, "t").district_of(f"Organization/{org['id']}")
    assert found == (district if kept else None)
    data = {"serviceRequest": "ServiceRequest/s", "task": "Task/t", "requester": f"Organization/{org['id']}",
            "priority": "stat", "cancelledAt": "2026-12-05T10:00:00+07:00", **({"district": found} if found else {})}
    make_event("teleconsult.consult.cancelled", data, subject="ServiceRequest/s")
