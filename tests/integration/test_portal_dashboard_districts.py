"""A demo facility's consult and its payment count under the facility's district on the dashboard,
along the path the district travels in Sen (real EHR process, the real FerretDB):

1. the demo province is seeded into the EHR (deploy/local/seed.py): each Organization's address
   carries its district;
2. teleconsult reads a requesting clinic's district from the EHR (``EhrClient.district_of``) into
   the consult's ``teleconsult.consult.requested`` event;
3. billing keeps the requested event's district and puts it on the consult's invoice
   (``charge_consult``); a transfer paying that invoice carries it into its
   ``billing.payment.received`` event;
4. the portal's read model counts both events, and the dashboard filtered by the district shows
   the consult and the payment; another district shows neither.
"""

from __future__ import annotations

import importlib.util
import json
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from sen_shared.auth import issue_dev_token
from sen_shared.bus.events import make_event
from sen_shared.bus.outbox import entry_event

from tests.support import web_process

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
DATA = json.loads((ROOT / "deploy/local/demo-province.json").read_text(encoding="utf-8"))
VN_TZ = "Asia/Ho_Chi_Minh"


def _seed_module() -> Any:
    spec = importlib.util.spec_from_file_location("sen_demo_seed", ROOT / "deploy/local/seed.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_demo_facilitys_consult_and_payment_count_under_its_district(
        base_env, run_id, tmp_path_factory, mongo_client, dev_key, fresh_db):
    from zoneinfo import ZoneInfo

    from sen_billing.domain import invoice_port, invoices, pricing
    from sen_billing.domain.payments import PAYMENTS, record_transfer
    from sen_billing.domain.webhooks import Transfer
    from sen_portal.domain.dashboard import dashboard
    from sen_portal.domain.reporting import record_event
    from sen_teleconsult.adapters.ehr import EhrClient

    ehr_db = f"sen_t{run_id}_pdd_ehr"
    with web_process("ehr", {**base_env, "SEN_DB": ehr_db}, tmp_path_factory.mktemp("ehr") / "ehr.log") as url:
        token = issue_dev_token(dev_key, "admin")
        r = httpx.post(f"{url}/fhir", json=_seed_module().province_bundle(DATA), timeout=60,
                       headers={"Authorization": f"Bearer {token}", "Content-Type": "application/fhir+json"})
        assert r.status_code == 200, r.text[:500]
        ehr = EhrClient(url, 10, token)
        found = {o["id"]: ehr.district_of(f"Organization/{o['id']}") for o in DATA["organizations"]}
    mongo_client.drop_database(ehr_db)
    assert found == {o["id"]: o["district"] for o in DATA["organizations"]}
    clinic = "tyt-my-hiep"
    district = found[clinic]
    assert district == "Huyện Cao Lãnh"

    now = datetime.now(ZoneInfo(VN_TZ))
    sr = f"ServiceRequest/sr-{run_id}"
    requested = make_event("teleconsult.consult.requested", {
        "serviceRequest": sr, "requester": f"Organization/{clinic}", "district": district, "priority": "routine",
        "requestedAt": now.isoformat()}, subject=sr, validate=False)
    billing_db = mongo_client[f"sen_t{run_id}_pdd_billing"]
    try:
        pricing.load(billing_db)
        invoices.remember_request(billing_db, requested)
        completed = {"data": {"serviceRequest": sr, "patient": "Patient/bn-0001", "requester": f"Organization/{clinic}",
                              "completedAt": now.isoformat()}}  # no district: billing keeps the requested one's
        iid = invoices.charge_consult(billing_db, completed, level_of=lambda _facility: "commune",
                                      base_salary=2_340_000)
        invoice = invoice_port.get(billing_db, iid)
        assert invoice is not None and invoice.district == district and invoice.owed > 0
        paid = record_transfer(billing_db, Transfer(provider="test", transaction_id=f"t-{run_id}", amount=invoice.owed,
                                                    description=f"{invoice.reference} thanh toan hoi chan"),
                               f"inbox-{run_id}", seen=False)
        assert paid.created
        doc = billing_db[PAYMENTS].find_one({"_id": paid.payment["_id"]})
        received = [entry_event(e) for e in doc["outbox"]]
        assert [e["data"].get("district") for e in received] == [district]
    finally:
        mongo_client.drop_database(billing_db.name)

    for event in (requested, *received):
        assert record_event(fresh_db, event) is True
    day = now.date()
    mine = dashboard(fresh_db, day, day, district)
    assert sum(r["count"] for r in mine["consults_per_facility_week"]) == 1
    assert mine["consults_per_facility_week"][0]["facility"] == f"Organization/{clinic}"
    assert mine["cashless_share"]["transfer_amount"] == invoice.owed
    other = dashboard(fresh_db, day, day, "Huyện Tháp Mười")
    assert other["consults_per_facility_week"] == [] and other["cashless_share"]["transfer_amount"] == 0
