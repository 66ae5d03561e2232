"""The receipt's JSON (GET /payments/receipts/{id}) says what was paid for and by whom, as its printed
copy does: the portal's receipt page showed the facility, the date and the amounts only (the stored
receipt holds the invoice's lines and the patient's name; the JSON left them out)."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime

import pytest
from sen_shared.auth import issue_dev_token

from tests.support import app_client

pytestmark = pytest.mark.integration


def test_the_receipt_json_lists_what_was_paid_for_and_by_whom(base_env, mongo_client, dev_key) -> None:
    db_name = f"sen_billing_r{uuid.uuid4().hex[:8]}"
    env = {**base_env, "SEN_FACILITY_NAMES": json.dumps({"org-a": "Trạm Y tế xã Mỹ Hiệp"})}
    with app_client("billing", env, db_name, mongo_client) as (client, _app):
        db = mongo_client[db_name]
        iid = "inv-" + uuid.uuid4().hex[:10]
        db["receipts"].insert_one({
            "_id": iid, "number": "ORG-A-2026-000001", "invoice": iid, "facility": "org-a", "owed": 189000,
            "paid": 200000, "credit": 11000, "settled_at": datetime(2026, 12, 5, 1, 30, tzinfo=UTC),
            "day": "2026-12-05", "reconciliation": f"pr-{iid}", "channel": "cash", "payments": [],
            "lines": [{"text": "Hội chẩn từ xa", "patientShare": 150000}, {"text": "Khám bệnh", "patientShare": 39000}],
            "patient": "Nguyễn Văn A", "invoice_title": ""})
        h = {"Authorization": f"Bearer {issue_dev_token(dev_key, 'cashier', facility='org-a')}"}
        r = client.get(f"/payments/receipts/{iid}", headers=h)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["lines"] == [{"text": "Hội chẩn từ xa", "patientShare": 150000},
                                 {"text": "Khám bệnh", "patientShare": 39000}]
        assert body["patient"] == "Nguyễn Văn A" and body["facility"] == "org-a" and body["paid"] == 200000
        # the facility's name as billing's printed receipt prints it: a cashier may not read the EHR's
        # Organizations, so the portal's receipt page showed the id unless another user had loaded the names
        assert body["facilityName"] == "Trạm Y tế xã Mỹ Hiệp"
        db["receipts"].update_one({"_id": iid}, {"$set": {"patient": ""}})  # the test is the only writer
        assert "patient" not in client.get(f"/payments/receipts/{iid}", headers=h).json()
        db["receipts"].update_one({"_id": iid}, {"$set": {"facility": "org-z"}})  # a facility billing cannot name
        h = {"Authorization": f"Bearer {issue_dev_token(dev_key, 'cashier', facility='org-z')}"}
        assert "facilityName" not in client.get(f"/payments/receipts/{iid}", headers=h).json()
