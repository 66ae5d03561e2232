"""The issue's configurable points, from the environment to what the domain is given (no I/O):
the SLA hours per priority, the on-duty leads, the public holidays, the Jitsi tokens' lifetime and
the reminders' retries. Each would be lost silently if a setting stopped reaching its use."""

from __future__ import annotations

import json
from datetime import date, datetime, timedelta

import jwt
import pytest
from sen_teleconsult.config import DEFAULT_SLA_HOURS, TeleconsultSettings
from sen_teleconsult.domain import availability as av
from sen_teleconsult.domain import consults as rules
from sen_teleconsult.domain.sla import on_duty_lead
from sen_teleconsult.domain.video import VideoConfig, create_room
from sen_teleconsult.scheduling_settings import reminder_config, scheduling_config

SECRET = "s3cret-for-tests-0123456789abcdef"


@pytest.fixture(autouse=True)
def _servers(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    """The settings every process needs (never connected to here)."""
    monkeypatch.setenv("SEN_DEV_JWT_KEY", str(tmp_path / "dev-jwt.pem"))
    monkeypatch.setenv("MONGO_URL", "mongodb://127.0.0.1:1/")
    monkeypatch.setenv("AMQP_URL", "amqp://guest:guest@127.0.0.1:1//")
    for name in ("SEN_CONSULT_SLA_HOURS", "SEN_ON_DUTY_LEADS", "SEN_TELECONSULT_HOLIDAYS", "SEN_JITSI_APP_SECRET",
                 "SEN_JITSI_GRACE_MINUTES", "SEN_TELECONSULT_REMINDER_OFFSETS", "SEN_REMINDER_MAX_ATTEMPTS",
                 "SEN_REMINDER_BACKOFF_SECONDS"):
        monkeypatch.delenv(name, raising=False)


def settings(monkeypatch: pytest.MonkeyPatch, **env: str) -> TeleconsultSettings:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return TeleconsultSettings()


def test_the_sla_hours_are_set_per_priority_and_the_others_keep_their_default(monkeypatch):
    s = settings(monkeypatch, SEN_CONSULT_SLA_HOURS=json.dumps({"stat": 0.5, "routine": 48}))
    assert s.sla_hours == {"stat": 0.5, "asap": 4.0, "urgent": 24.0, "routine": 48.0}
    t = datetime(2026, 12, 7, 8, 0, tzinfo=av.TZ)
    assert rules.due_time(t, "stat", s.sla_hours) == t + timedelta(minutes=30)
    assert rules.due_time(t, "routine", s.sla_hours) == t + timedelta(hours=48)
    assert rules.due_time(t, "asap", s.sla_hours) == t + timedelta(hours=4)


def test_the_default_sla_hours_are_the_issues(monkeypatch):
    assert settings(monkeypatch).sla_hours == DEFAULT_SLA_HOURS == {"stat": 1, "asap": 4, "urgent": 24, "routine": 72}


def test_an_sla_for_a_priority_fhir_does_not_have_stops_the_process(monkeypatch):
    monkeypatch.setenv("SEN_CONSULT_SLA_HOURS", json.dumps({"emergency": 1}))
    from sen_teleconsult.config import settings_from_env

    with pytest.raises(SystemExit):
        settings_from_env()


def test_a_breach_goes_to_its_hubs_on_duty_lead_else_the_default_one(monkeypatch):
    s = settings(monkeypatch, SEN_ON_DUTY_LEADS=json.dumps({"bvdk-tinh": "Practitioner/bs-truong-khoa",
                                                            "*": "Practitioner/bs-truc"}))
    assert on_duty_lead("Organization/bvdk-tinh", s.on_duty_leads) == "Practitioner/bs-truong-khoa"
    assert on_duty_lead("Organization/bv-khac", s.on_duty_leads) == "Practitioner/bs-truc"
    monkeypatch.setenv("SEN_ON_DUTY_LEADS", json.dumps({"bvdk-tinh": "bs-truong-khoa"}))  # not a reference
    from sen_teleconsult.config import settings_from_env

    with pytest.raises(SystemExit):
        settings_from_env()


def test_the_public_holidays_are_the_configured_list_and_take_every_slot_of_their_day(monkeypatch):
    monday = date(2026, 12, 7)
    s = settings(monkeypatch, SEN_TELECONSULT_HOLIDAYS="2026-12-07, 2027-01-01")
    cfg = scheduling_config(s)
    assert cfg.holidays == {monday, date(2027, 1, 1)}
    sched = av.schedule_resource("s1", practitioner="Practitioner/x", organization="Organization/hub",
                                 specialty_code="394579002", specialty_text="Tim mạch",
                                 windows=[(["mon", "tue"], "08:00:00", "10:00:00")])
    a = av.from_schedule(sched)
    assert av.day_slots(a, monday, cfg.holidays) == ()
    assert av.day_slots(a, monday + timedelta(days=1), cfg.holidays) != ()
    # the default list is Vietnam's (National Day), and an empty setting is no holiday at all
    monkeypatch.delenv("SEN_TELECONSULT_HOLIDAYS")
    assert date(2026, 9, 2) in scheduling_config(settings(monkeypatch)).holidays
    assert scheduling_config(settings(monkeypatch, SEN_TELECONSULT_HOLIDAYS="")).holidays == frozenset()
    monkeypatch.setenv("SEN_TELECONSULT_HOLIDAYS", "2026-13-01")
    from sen_teleconsult.config import settings_from_env

    with pytest.raises(SystemExit):
        settings_from_env()


def test_the_jitsi_tokens_expire_the_configured_time_after_the_slot_ends(monkeypatch):
    s = settings(monkeypatch, SEN_JITSI_APP_SECRET=SECRET, SEN_JITSI_GRACE_MINUTES="10",
                 SEN_JITSI_BASE_URL="https://meet.benhvien.example")
    video = scheduling_config(s).video
    start = datetime(2026, 12, 7, 8, 0, tzinfo=av.TZ)
    end = start + timedelta(minutes=30)
    room = create_room(video, start, end)
    assert room.expires == end + timedelta(minutes=10)
    for url in (room.clinic_url, room.doctor_url):
        claims = jwt.decode(url.split("jwt=")[1], SECRET, algorithms=["HS256"], audience="jitsi",
                            options={"verify_exp": False, "verify_nbf": False})
        assert claims["exp"] == int((end + timedelta(minutes=10)).timestamp())  # after the slot, not open-ended
        assert claims["nbf"] <= int(start.timestamp()) and claims["room"] == room.name
        # signed with the configured secret only
        with pytest.raises(jwt.InvalidSignatureError):
            jwt.decode(url.split("jwt=")[1], "another-secret-0123456789abcdefgh", algorithms=["HS256"],
                       audience="jitsi", options={"verify_exp": False, "verify_nbf": False})
    # as Jitsi checks it: a slot that ended 11 minutes ago has a dead token, one that ended 9 minutes ago not yet
    now = datetime.now(av.TZ)
    for ended, valid in ((now - timedelta(minutes=11), False), (now - timedelta(minutes=9), True)):
        token = create_room(video, ended - timedelta(minutes=30), ended).doctor_url.split("jwt=")[1]
        if valid:
            jwt.decode(token, SECRET, algorithms=["HS256"], audience="jitsi")
        else:
            with pytest.raises(jwt.ExpiredSignatureError):
                jwt.decode(token, SECRET, algorithms=["HS256"], audience="jitsi")
    assert VideoConfig().grace_minutes == 30


def test_the_reminders_offsets_and_retries_are_the_settings(monkeypatch):
    s = settings(monkeypatch, SEN_TELECONSULT_REMINDER_OFFSETS="1440,60,15", SEN_REMINDER_MAX_ATTEMPTS="3",
                 SEN_REMINDER_BACKOFF_SECONDS="45")
    assert scheduling_config(s).reminder_offsets == (1440, 60, 15)
    cfg = reminder_config(s)
    assert (cfg.max_attempts, cfg.backoff_seconds) == (3, 45.0)
