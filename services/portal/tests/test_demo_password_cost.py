"""The demo users' password hashes: scrypt at werkzeug's default cost (n=2^15, r=8, p=1; ~0.1 s a check) unless a
test portal is given the same passwords hashed with cheap parameters (SEN_PORTAL_DEMO_PASSWORD_HASHES, what
tests.support gives every portal the tests start: the suites sign in hundreds of times), and never that in
production."""

from __future__ import annotations

import json
import os

import pytest
from pydantic import ValidationError
from sen_portal.config import PortalSettings
from sen_portal.web import users
from sen_shared.config import load_settings
from werkzeug.security import generate_password_hash

from tests.support import CHEAP_SCRYPT, csrf_token, demo_password_hashes, portal_app

STRONG = "scrypt:32768:8:1"
TEST = {"MONGO_URL": "mongodb://127.0.0.1:1/", "AMQP_URL": "amqp://127.0.0.1:1//", "SEN_ENV": "test",
        "SEN_DEV_JWT_KEY": "dev.pem"}
PRODUCTION = {"MONGO_URL": "mongodb://127.0.0.1:1/", "AMQP_URL": "amqp://127.0.0.1:1//", "SEN_ENV": "production",
              "SEN_JWKS_URL": "https://id.example.vn/certs", "SEN_PORTAL_SECRET_KEY": "k3Jq9vXw2Lm8RtY5",
              "SEN_OIDC_ISSUER": "https://id.example.vn/realms/sen", "SEN_OIDC_CLIENT_ID": "sen-portal",
              "SEN_PORTAL_HUB": "bvdk-bac-sen", "SEN_REPORT_FACILITY_GOAL": "8",
              "SEN_REPORT_BASELINE_FACILITIES": '["bvdk-bac-sen"]', "SEN_REPORT_POPULATION": "12"}


@pytest.fixture()
def checked(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The methods (``scrypt:<n>:<r>:<p>``) of the hashes the demo sign-in checks passwords against."""
    methods: list[str] = []
    real = users.check_password_hash

    def spy(pwhash: str, password: str) -> bool:
        methods.append(pwhash.split("$", 1)[0])
        return real(pwhash, password)

    monkeypatch.setattr(users, "check_password_hash", spy)
    return methods


def _only(env: pytest.MonkeyPatch, values: dict[str, str]) -> None:
    for k in list(os.environ):
        if k.startswith(("SEN_", "MONGO_", "AMQP_")):
            env.delenv(k)
    for k, v in values.items():
        env.setenv(k, v)


def test_the_built_in_demo_hashes_are_scrypt_at_werkzeugs_default_cost() -> None:
    assert {pwhash.split("$", 1)[0] for _user, pwhash in users.DEMO_USERS.values()} == {STRONG}
    assert generate_password_hash("sen").split("$", 1)[0] == STRONG  # werkzeug's default, what made them


def test_production_settings_check_the_built_in_hashes_and_refuse_cheap_ones(monkeypatch, checked) -> None:
    _only(monkeypatch, PRODUCTION)
    hashes = load_settings(PortalSettings).demo_password_hashes
    assert hashes == {}
    assert users.check_demo_password("clinic", "sen-clinic", None, hashes).username == "clinic"
    assert users.check_demo_password("clinic", "sen-doctor", None, hashes) is None
    assert users.check_demo_password("nobody", "sen-clinic", None, hashes) is None
    assert checked == [STRONG] * 3  # an unknown name too: as long as a wrong password
    monkeypatch.setenv("SEN_PORTAL_DEMO_PASSWORD_HASHES", demo_password_hashes())
    with pytest.raises(ValidationError, match="SEN_PORTAL_DEMO_PASSWORD_HASHES is for tests only"):
        PortalSettings()


def test_a_cheap_hash_of_the_same_password_verifies_as_the_built_in_one_does(checked) -> None:
    cheap = json.loads(demo_password_hashes())
    for who in users.DEMO_USERS:
        assert users.check_demo_password(who, f"sen-{who}").username == who
        assert users.check_demo_password(who, f"sen-{who}", None, cheap).username == who
        assert users.check_demo_password(who, "sen-wrong", None, cheap) is None
    assert users.check_demo_password("nobody", "sen-admin", None, cheap) is None
    assert checked == [STRONG, CHEAP_SCRYPT, CHEAP_SCRYPT] * len(users.DEMO_USERS) + [CHEAP_SCRYPT]


def test_a_test_portal_signs_in_through_the_cheap_hashes(tmp_path, monkeypatch, checked) -> None:
    app = portal_app(tmp_path, monkeypatch)
    with app.test_client() as client:
        token = csrf_token(client.get("/login").get_data(as_text=True))
        wrong = client.post("/login", data={"username": "doctor", "password": "sen-clinic", "csrf_token": token})
        assert wrong.status_code == 401
        r = client.post("/login", data={"username": "doctor", "password": "sen-doctor", "csrf_token": token})
        assert r.status_code == 302 and r.headers["Location"].endswith("/worklist")
    assert checked == [CHEAP_SCRYPT, CHEAP_SCRYPT]


def test_a_portal_without_the_setting_signs_in_through_the_built_in_hashes(tmp_path, monkeypatch, checked) -> None:
    app = portal_app(tmp_path, monkeypatch, SEN_PORTAL_DEMO_PASSWORD_HASHES="{}")
    with app.test_client() as client:
        token = csrf_token(client.get("/login").get_data(as_text=True))
        r = client.post("/login", data={"username": "doctor", "password": "sen-doctor", "csrf_token": token})
        assert r.status_code == 302
    assert checked == [STRONG]


@pytest.mark.parametrize("value", ['{"nurse": "scrypt:1024:1:1$a$b"}', '{"clinic": "sen-clinic"}',
                                   '{"clinic": "pbkdf2:sha256:1$a$b"}'])
def test_a_hash_setting_sen_cannot_use_is_refused_by_name(monkeypatch, value: str) -> None:
    _only(monkeypatch, {**TEST, "SEN_PORTAL_DEMO_PASSWORD_HASHES": value})
    with pytest.raises(ValidationError, match="SEN_PORTAL_DEMO_PASSWORD_HASHES: .* must be one of"):
        PortalSettings()
