"""The portal's settings in production: the demo province's hub is no default there, nor its dashboard's goal,
baseline and residents (a second province's dashboard measured itself against Đồng Tháp's 165 and 22)."""

from __future__ import annotations

import os

import pytest
from sen_portal.config import PortalSettings
from sen_shared.config import load_settings

PRODUCTION = {"MONGO_URL": "mongodb://127.0.0.1:1/", "AMQP_URL": "amqp://127.0.0.1:1//", "SEN_ENV": "production",
              "SEN_JWKS_URL": "https://id.example.vn/certs", "SEN_PORTAL_SECRET_KEY": "k3Jq9vXw2Lm8RtY5",
              "SEN_OIDC_ISSUER": "https://id.example.vn/realms/sen", "SEN_OIDC_CLIENT_ID": "sen-portal",
              "SEN_REPORT_FACILITY_GOAL": "8", "SEN_REPORT_BASELINE_FACILITIES": '["bvdk-bac-sen"]',
              "SEN_REPORT_POPULATION": "12"}


@pytest.fixture()
def env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for k in list(os.environ):
        if k.startswith(("SEN_", "MONGO_", "AMQP_")):
            monkeypatch.delenv(k)
    for k, v in PRODUCTION.items():
        monkeypatch.setenv(k, v)
    return monkeypatch


def test_production_refuses_to_send_consults_to_the_demo_hub_by_default(env, capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        load_settings(PortalSettings)
    assert exc.value.code == 78
    assert capsys.readouterr().err.startswith("sen-portal: configuration error: SEN_PORTAL_HUB is required in "
                                              "production")


def test_production_takes_the_hub_it_is_given(env) -> None:
    env.setenv("SEN_PORTAL_HUB", "bvdk-tinh")
    assert load_settings(PortalSettings).hub == "bvdk-tinh"


def test_development_keeps_the_demo_hub(env) -> None:
    env.setenv("SEN_ENV", "development")
    env.setenv("SEN_DEV_JWT_KEY", "/tmp/none.pem")
    assert load_settings(PortalSettings).hub == "bvdk-dong-thap"


@pytest.mark.parametrize(("unset", "named"), [
    (("SEN_REPORT_FACILITY_GOAL",), "SEN_REPORT_FACILITY_GOAL is required in production"),
    (("SEN_REPORT_POPULATION",), "SEN_REPORT_POPULATION is required in production"),
    (("SEN_REPORT_BASELINE_FACILITIES",), "SEN_REPORT_BASELINE_FACILITIES or SEN_REPORT_FACILITY_BASELINE is required"),
])
def test_production_refuses_the_demo_provinces_dashboard_figures_by_default(env, capsys, unset, named) -> None:
    env.setenv("SEN_PORTAL_HUB", "bvdk-bac-sen")
    for name in unset:
        env.delenv(name)
    with pytest.raises(SystemExit) as exc:
        load_settings(PortalSettings)
    assert exc.value.code == 78
    assert capsys.readouterr().err.startswith(f"sen-portal: configuration error: {named}")


def test_production_takes_the_provinces_dashboard_figures(env) -> None:
    env.setenv("SEN_PORTAL_HUB", "bvdk-bac-sen")
    targets = load_settings(PortalSettings).report_targets()
    assert (targets.facility_goal, targets.facility_baseline, targets.population) == (8, 1, 12)
    env.delenv("SEN_REPORT_BASELINE_FACILITIES")
    env.setenv("SEN_REPORT_FACILITY_BASELINE", "0")  # a province with none before Sen says so
    assert load_settings(PortalSettings).report_targets().facility_baseline == 0


def test_production_sends_the_session_cookie_over_https_only_by_default(env) -> None:
    """Only the production overlay said SEN_PORTAL_COOKIE_SECURE=true: a production portal deployed another way
    sent its session cookie over plain HTTP too."""
    env.setenv("SEN_PORTAL_HUB", "bvdk-bac-sen")
    assert load_settings(PortalSettings).cookie_secure is True
    env.setenv("SEN_ENV", "development")
    env.setenv("SEN_DEV_JWT_KEY", "/tmp/none.pem")
    assert load_settings(PortalSettings).cookie_secure is False  # make run serves plain HTTP


def test_production_takes_an_explicit_false_for_a_lab_and_says_so_at_start(env, capfd) -> None:
    from sen_portal.app import create_app

    env.setenv("SEN_PORTAL_HUB", "bvdk-bac-sen")
    env.setenv("SEN_PORTAL_COOKIE_SECURE", "false")
    settings = load_settings(PortalSettings)
    assert settings.cookie_secure is False
    capfd.readouterr()
    app = create_app(settings)
    assert app.app.config["SESSION_COOKIE_SECURE"] is False
    said = capfd.readouterr().err
    assert '"level": "WARNING"' in said and "SEN_PORTAL_COOKIE_SECURE=false in production" in said, said
    env.setenv("SEN_PORTAL_COOKIE_SECURE", "true")
    app = create_app(load_settings(PortalSettings))
    assert app.app.config["SESSION_COOKIE_SECURE"] is True
    assert "SEN_PORTAL_COOKIE_SECURE" not in capfd.readouterr().err


@pytest.mark.parametrize(("given", "used"), [
    ("mongodb://127.0.0.1:1", "mongodb://127.0.0.1:1/?heartbeatFrequencyMS=1000"),
    ("mongodb://sen:s3cr3t-Pw@db1:27017,db2:27017/sen?replicaSet=rs0",
     "mongodb://sen:s3cr3t-Pw@db1:27017,db2:27017/sen?replicaSet=rs0&heartbeatFrequencyMS=1000"),
    ("mongodb://127.0.0.1:1/?heartbeatFrequencyMS=5000", "mongodb://127.0.0.1:1/?heartbeatFrequencyMS=5000"),
])
def test_the_portals_database_client_checks_its_servers_every_second_unless_told(env, given, used) -> None:
    """pymongo's monitor checks the servers every second, not its 10 s: the pages do not ask a database it knows out
    of reach, and ask it again once it finds it back (sen_portal.portal_db); a URL saying how often is kept."""
    from pymongo.uri_parser import parse_uri
    from sen_portal import portal_db

    env.setenv("SEN_PORTAL_HUB", "bvdk-tinh")
    env.setenv("MONGO_URL", given)
    url = load_settings(PortalSettings).mongo_url
    assert url == used
    seconds = 5 if "5000" in given else portal_db.HEARTBEAT_MS / 1000
    assert parse_uri(url)["options"]["heartbeatFrequencyMS"] == seconds  # as pymongo reads it
