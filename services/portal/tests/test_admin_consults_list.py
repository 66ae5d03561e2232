"""The consults list read by the admin (walk of session 28): an account of no facility reads every facility's
consults (teleconsult scopes the list by the token's facility), yet the page said "Các ca hội chẩn của cơ sở" (of
my facility) and named no clinic on its rows. Flask's test client; teleconsult and the EHR stubbed at the portal's
``fhir_get``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.support import portal_app, portal_signed_in

TASKS = [{"resourceType": "Task", "id": f"t{i}", "status": "requested", "priority": "routine",
          "authoredOn": f"2026-12-0{i}T09:00:00+07:00", "for": {"reference": f"Patient/p{i}"},
          "basedOn": [{"reference": f"ServiceRequest/sr{i}"}], "focus": {"reference": f"ServiceRequest/sr{i}"},
          "requester": {"reference": f"Organization/{org}"}, "owner": {"reference": "Organization/bvdk-dong-thap"}}
         for i, org in ((1, "tyt-my-hiep"), (2, "ttyt-thap-muoi"))]


@pytest.fixture()
def app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from sen_portal.web import clinic, directory, doctor
    from sen_portal.web import patients as patient_module

    def fhir_get(service: str, path: str, params: dict[str, str] | None = None, **_kw: Any) -> dict[str, Any]:
        found: list[dict[str, Any]] = []
        if (service, path) == ("teleconsult", "/fhir/Task") and (params or {}).get("status", "").startswith("req"):
            found = TASKS
        return {"resourceType": "Bundle", "type": "searchset", "entry": [{"resource": r} for r in found]}

    for module in (doctor, clinic, patient_module):
        monkeypatch.setattr(module, "fhir_get", fhir_get)
    monkeypatch.setattr(directory, "names", lambda rtype: {
        "Organization": {"tyt-my-hiep": "Trạm Y tế xã Mỹ Hiệp", "ttyt-thap-muoi": "Trung tâm Y tế huyện Tháp Mười"},
        "Practitioner": {}}.get(rtype, {}))
    return portal_app(tmp_path, monkeypatch)


def test_the_admin_reads_every_facilitys_consults_each_named_by_its_clinic(app):
    page = portal_signed_in(app, "admin").get("/consults").get_data(as_text=True)
    assert "<h1>Hội chẩn <small>(mọi cơ sở)</small></h1>" in page and "của cơ sở" not in page
    assert "Cơ sở gửi" in page
    assert '<td role="cell" data-label="Cơ sở gửi" data-testid="consult-requester">Trạm Y tế xã Mỹ Hiệp</td>' in page
    assert ">Trung tâm Y tế huyện Tháp Mười</td>" in page
    en = portal_signed_in(app, "admin", "en").get("/consults").get_data(as_text=True)
    assert "<h1>Consults <small>(every facility)</small></h1>" in en and "Requesting clinic" in en


def test_a_clinics_list_stays_its_facilitys_with_no_clinic_column(app):
    page = portal_signed_in(app, "clinic").get("/consults").get_data(as_text=True)
    assert "<h1>Các ca hội chẩn của cơ sở</h1>" in page
    assert 'data-testid="consult-requester"' not in page and "Cơ sở gửi" not in page
