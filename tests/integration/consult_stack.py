"""The services and the portal the consult page modules share: a real EHR (and its database name) and teleconsult
as gunicorn processes on loopback, the portal in this process, and the autouse fixtures that start each test
with no facility or doctor names kept and the demo nurse's take-on budget unspent.

``from tests.integration.consult_stack import *`` puts these fixtures in a module by name. The two processes
are the session's (``consult_services``, tests/integration/conftest.py): started once for every module on
this stack (test_portal_consult_patients and the modules testing more consult pages), not once per module.
Each module starts from emptied databases seeded with :func:`ehr_seed`, as it did on processes of its own;
the portal (in process) is the module's."""

from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from tests.support import app_client, emptied, put_resources

__all__ = ["_budget_unspent", "_names_from_this_ehr", "ehr", "ehr_db", "portal", "tc", "tc_db"]

HUB, CLINIC = "bvdk-dong-thap", "tyt-my-hiep"  # the portal's demo doctor's hub and demo clinic
LAN, BINH, CUONG = "p-lan", "p-binh", "p-cuong"
# Cường is a baby (his age in months) whenever the suite runs: born some five months before today, never
# a fixed date that turns one a year later
BORN = {LAN: "1968-03-15", BINH: "1990-11-02",
        CUONG: (datetime.now(ZoneInfo("Asia/Ho_Chi_Minh")) - timedelta(days=150)).date().isoformat()}


def _patient(pid: str, family: str, given: str, gender: str) -> dict[str, Any]:
    return {"resourceType": "Patient", "id": pid, "gender": gender, "birthDate": BORN[pid],
            "name": [{"family": family, "given": given.split()}],
            "managingOrganization": {"reference": f"Organization/{CLINIC}"}}


def ehr_seed() -> list[dict[str, Any]]:
    """What the stack's EHR holds at the start of each module on it: the hub, the demo clinic, the demo doctor
    and the three patients."""
    return [
        {"resourceType": "Organization", "id": HUB, "name": "Bệnh viện Đa khoa Đồng Tháp"},
        {"resourceType": "Organization", "id": CLINIC, "name": "Trạm Y tế xã Mỹ Hiệp",
         "address": [{"district": "Huyện Cao Lãnh", "state": "Đồng Tháp"}]},
        {"resourceType": "Practitioner", "id": "bs-nguyen-van-an",  # the portal's demo doctor
         "name": [{"family": "Nguyễn", "given": ["Văn", "An"]}]},
        _patient(LAN, "Nguyễn", "Thị Lan", "female"),
        _patient(BINH, "Trần", "Văn Bình", "male"),
        _patient(CUONG, "Lê", "Văn Cường", "male"),
    ]


@pytest.fixture(autouse=True)
def _names_from_this_ehr():
    """The portal keeps the EHR's facility and doctor names per process for minutes (and consults' reasons, files'
    names, answers: sen_portal.caches): each test starts with none kept, so names come from this module's EHR, not
    from an earlier test's stub (the worklist showed Organization/tyt-my-hiep after the page tests of the same run
    had kept their stub's names)."""
    from sen_portal import caches

    caches.forget_all()


@pytest.fixture(scope="module")
def portal(base_env, run_id, ehr, tc, mongo_client):
    env = {**base_env, "SEN_EHR_URL": ehr, "SEN_TELECONSULT_URL": tc, "SEN_BILLING_URL": tc,
           "SEN_HTTP_TIMEOUT": "10"}
    with app_client("portal", env, f"sen_t{run_id}_pcp_portal", mongo_client) as (_client, app):
        app.app.config["TESTING"] = True
        yield app.app


@pytest.fixture(scope="module")
def ehr_db(consult_services):
    return consult_services["ehr_db"]


@pytest.fixture(scope="module")
def tc_db(consult_services):
    return consult_services["tc_db"]


@pytest.fixture(scope="module")
def ehr(consult_services, mongo_client, dev_key):
    """The session's EHR (its URL) with nothing from an earlier module in it or in teleconsult's database:
    the seed alone."""
    emptied(mongo_client, consult_services["ehr_db"], consult_services["tc_db"])
    put_resources(consult_services["ehr"], dev_key, ehr_seed())
    return consult_services["ehr"]


@pytest.fixture(scope="module")
def tc(consult_services, ehr):
    return consult_services["tc"]


@pytest.fixture(autouse=True)
def _budget_unspent(ehr, ehr_db, mongo_client):
    """Each test starts with the demo clinic nurse's take-on budget unspent: the wrong numbers an earlier test
    gave (a take-on, a registration meeting a number held elsewhere) count in the EHR for 15 minutes, and five
    of them made a later test's registration a 429 instead of the take-on form, depending on the order."""
    mongo_client[ehr_db]["take_on_failures"].delete_many({})
