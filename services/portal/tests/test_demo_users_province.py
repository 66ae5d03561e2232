"""The development sign-in's users as people of the province ``make run`` serves (SEN_PORTAL_DEMO_USERS, from the
province file's ``demoUsers``): the same user names and passwords, the province's names, facilities and
practitioners. Without it a second province's ``make run`` signed its nurse in at the demo's Trạm Y tế xã Mỹ Hiệp,
whose patients and consults it does not have."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError
from sen_portal.config import PortalSettings
from sen_portal.web.users import check_demo_password

from tests.support import csrf_token, portal_app

PEOPLE = {"clinic": {"name": "Mai Thị Hoa", "facility": "tyt-an-binh", "practitioner": "ys-mai-thi-hoa"},
          "health-dept": {"name": "Sở Y tế Bắc Sen", "facility": "so-y-te-bac-sen"}}


def test_a_demo_user_is_the_provinces_person_with_the_same_password() -> None:
    nurse = check_demo_password("clinic", "sen-clinic", PEOPLE)
    assert (nurse.role, nurse.name, nurse.facility, nurse.practitioner) == (
        "clinic", "Mai Thị Hoa", "tyt-an-binh", "ys-mai-thi-hoa")
    assert check_demo_password("clinic", "wrong", PEOPLE) is None
    # a user the province does not name stays the demo's
    assert check_demo_password("cashier", "sen-cashier", PEOPLE).facility == "tyt-my-hiep"
    assert check_demo_password("clinic", "sen-clinic").facility == "tyt-my-hiep"


@pytest.mark.parametrize("value", ['{"admin": {"name": "x"}}', '{"clinic": {"role": "admin"}}',
                                   '{"clinic": {"facility": ""}}', '{"nurse": {"name": "x"}}'])
def test_a_demo_user_setting_sen_cannot_use_is_refused_by_name(monkeypatch, value: str) -> None:
    monkeypatch.setenv("SEN_PORTAL_DEMO_USERS", value)
    with pytest.raises(ValidationError, match="SEN_PORTAL_DEMO_USERS"):
        PortalSettings(MONGO_URL="mongodb://127.0.0.1:1/", AMQP_URL="amqp://127.0.0.1:1//", SEN_ENV="test",
                       SEN_DEV_JWT_KEY="dev.pem")


def test_signing_in_as_the_clinic_is_the_provinces_nurse(tmp_path, monkeypatch) -> None:
    app = portal_app(tmp_path, monkeypatch, SEN_PORTAL_DEMO_USERS=json.dumps(PEOPLE, ensure_ascii=False))
    with app.test_client() as client:
        token = csrf_token(client.get("/login").get_data(as_text=True))
        r = client.post("/login", data={"username": "clinic", "password": "sen-clinic", "csrf_token": token})
        assert r.status_code in (302, 303)
        with client.session_transaction() as session:
            user = session["user"]
        assert (user["name"], user["facility"], user["practitioner"]) == (
            "Mai Thị Hoa", "tyt-an-binh", "ys-mai-thi-hoa")
