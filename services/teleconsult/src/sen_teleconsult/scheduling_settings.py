"""The scheduling part of the teleconsult settings (slots, holds, video, reminders).

``config.TeleconsultSettings`` inherits it; kept in its own module so the booking settings and
their parsing read as one piece. :func:`scheduling_config` / :func:`reminder_config` turn them
into the domain's plain configuration objects.
"""

from __future__ import annotations

import json
from typing import ClassVar, Literal

from pydantic import Field, field_validator
from sen_shared.config import Settings

from .domain.availability import AvailabilityError, parse_holidays
from .domain.reminders import Notifier, ReminderConfig, notifier_from
from .domain.scheduling import SchedulingConfig
from .domain.video import VideoConfig

# Vietnam's fixed-date public holidays of 2026-2027 (New Year, Reunification Day, Labour Day,
# National Day) and the Tết 2026 break; lunar-calendar holidays are announced each year: set the
# whole list with SEN_TELECONSULT_HOLIDAYS.
DEFAULT_HOLIDAYS = ("2026-01-01,2026-02-14,2026-02-15,2026-02-16,2026-02-17,2026-02-18,2026-02-19,2026-02-20,"
                    "2026-02-21,2026-02-22,2026-04-30,2026-05-01,2026-09-01,2026-09-02,"
                    "2027-01-01,2027-04-30,2027-05-01,2027-09-02")


class SchedulingSettings(Settings):
    secret_fields: ClassVar[tuple[str, ...]] = ("jitsi_app_secret", "smtp_password")
    hold_minutes: float = Field(10.0, validation_alias="SEN_TELECONSULT_HOLD_MINUTES", gt=0,
                                description="how long $hold keeps a slot before it is free again")
    holidays: str = Field(DEFAULT_HOLIDAYS, validation_alias="SEN_TELECONSULT_HOLIDAYS",
                          description="public holidays without slots, comma-separated YYYY-MM-DD")
    horizon_days: int = Field(56, validation_alias="SEN_TELECONSULT_HORIZON_DAYS", gt=0, le=366,
                              description="how many days ahead slots are offered")
    notice_minutes: int = Field(0, validation_alias="SEN_TELECONSULT_NOTICE_MINUTES", ge=0,
                                description="a slot must start at least this long after the booking")
    reminder_offsets: str = Field("1440,60", validation_alias="SEN_TELECONSULT_REMINDER_OFFSETS",
                                  description="reminders, minutes before the start, comma-separated")
    jitsi_base_url: str = Field("https://meet.jit.si", validation_alias="SEN_JITSI_BASE_URL",
                                description="base URL of the Jitsi Meet deployment that hosts the video rooms")
    jitsi_app_id: str = Field("sen", validation_alias="SEN_JITSI_APP_ID", description="Jitsi JWT issuer (app id)")
    jitsi_app_secret: str = Field("", validation_alias="SEN_JITSI_APP_SECRET",
                                  description="Jitsi app secret: when set, join links carry signed JWTs")
    jitsi_grace_minutes: int = Field(30, validation_alias="SEN_JITSI_GRACE_MINUTES", ge=0,
                                     description="how long after the slot a join token stays valid")
    notify_sender: Literal["console", "smtp"] = Field("console", validation_alias="SEN_NOTIFY_SENDER",
                                                      description="reminder sender: console (file or log) or smtp")
    notify_file: str = Field("", validation_alias="SEN_NOTIFY_FILE",
                             description="console sender: file to append reminders to (empty: the log)")
    smtp_host: str = Field("127.0.0.1", validation_alias="SEN_SMTP_HOST")
    smtp_port: int = Field(25, validation_alias="SEN_SMTP_PORT", gt=0, lt=65536)
    smtp_from: str = Field("sen@localhost", validation_alias="SEN_SMTP_FROM")
    smtp_user: str = Field("", validation_alias="SEN_SMTP_USER")
    smtp_password: str = Field("", validation_alias="SEN_SMTP_PASSWORD")
    smtp_starttls: bool = Field(False, validation_alias="SEN_SMTP_STARTTLS")
    notify_addresses: dict[str, str] = Field(
        default_factory=dict, validation_alias="SEN_NOTIFY_ADDRESSES",
        description='reminder addresses as JSON: {"Practitioner/bs-x": "x@benhvien.vn", "Organization/...": ...}')
    notify_domain: str = Field("sen.invalid", validation_alias="SEN_NOTIFY_DOMAIN",
                               description="addresses not in SEN_NOTIFY_ADDRESSES: <type>-<id>@<this domain>")
    reminder_max_attempts: int = Field(5, validation_alias="SEN_REMINDER_MAX_ATTEMPTS", gt=0)
    reminder_backoff_seconds: float = Field(30.0, validation_alias="SEN_REMINDER_BACKOFF_SECONDS", gt=0)
    scheduling_sweep_seconds: float = Field(5.0, validation_alias="SEN_SCHEDULING_SWEEP_SECONDS", gt=0,
                                            description="how often the worker releases expired holds and "
                                                        "sends due reminders")

    @field_validator("holidays")
    @classmethod
    def _holidays(cls, value: str) -> str:
        try:
            parse_holidays(value)
        except AvailabilityError as err:
            raise ValueError(str(err)) from None
        return value

    @field_validator("reminder_offsets")
    @classmethod
    def _offsets(cls, value: str) -> str:
        parts = [p.strip() for p in value.split(",") if p.strip()]
        if not all(p.isdigit() and 0 < int(p) <= 60 * 24 * 14 for p in parts):
            raise ValueError("minutes before the start, comma-separated, each 1..20160")
        return value

    @field_validator("notify_addresses", mode="before")
    @classmethod
    def _addresses(cls, value: object) -> object:
        if isinstance(value, str):
            value = json.loads(value) if value.strip() else {}
        return value


def scheduling_config(s: SchedulingSettings) -> SchedulingConfig:
    return SchedulingConfig(
        hold_minutes=s.hold_minutes, holidays=parse_holidays(s.holidays), horizon_days=s.horizon_days,
        notice_minutes=s.notice_minutes,
        reminder_offsets=tuple(int(p) for p in s.reminder_offsets.split(",") if p.strip()),
        video=VideoConfig(base_url=s.jitsi_base_url, app_id=s.jitsi_app_id, app_secret=s.jitsi_app_secret,
                          grace_minutes=s.jitsi_grace_minutes),
        service=s.service)


def reminder_config(s: SchedulingSettings) -> ReminderConfig:
    return ReminderConfig(max_attempts=s.reminder_max_attempts, backoff_seconds=s.reminder_backoff_seconds,
                          addresses=dict(s.notify_addresses), domain=s.notify_domain)


def notifier(s: SchedulingSettings) -> Notifier:
    return notifier_from(s.notify_sender, path=s.notify_file, host=s.smtp_host, port=s.smtp_port,
                         sender=s.smtp_from, username=s.smtp_user, password=s.smtp_password,
                         starttls=s.smtp_starttls)
