"""Settings of the teleconsult service, read from the environment at start."""

from __future__ import annotations

import json
import re

from pydantic import Field, field_validator
from sen_shared.config import Settings, load_settings

from .scheduling_settings import SchedulingSettings

EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
DEFAULT_SLA_HOURS = {"stat": 1.0, "asap": 4.0, "urgent": 24.0, "routine": 72.0}


class TeleconsultSettings(SchedulingSettings, Settings):  # SchedulingSettings: slots, holds, video, reminders
    service: str = "teleconsult"
    ehr_url: str = Field("http://127.0.0.1:8081", validation_alias="SEN_EHR_URL",
                         description="base URL of the ehr service (patients are checked there at submission)")
    sla_hours: dict[str, float] = Field(
        default_factory=lambda: dict(DEFAULT_SLA_HOURS), validation_alias="SEN_CONSULT_SLA_HOURS",
        description='hours from submission to the due time, per priority, as JSON: {"stat": 1, "asap": 4, ...}')
    on_duty_leads: dict[str, str | dict[str, str]] = Field(
        default_factory=dict, validation_alias="SEN_ON_DUTY_LEADS",
        description='the on-duty lead a breached consult escalates to and is e-mailed, per hub Organization id, '
                    'as JSON: {"bvdk-tinh": "Practitioner/bs-truong-khoa", "*": "Practitioner/..."} ("*": any hub); '
                    'a lead with its address: {"lead": "Practitioner/...", "email": "truc@benhvien.vn"}')
    lead_alert_lookback_hours: float = Field(
        72.0, validation_alias="SEN_LEAD_ALERT_LOOKBACK_HOURS", ge=0,
        description="how far back the SLA sweep looks for breaches whose on-duty lead was never sent a message "
                    "(recorded before the message existed); 0: not at all")
    default_hub: str = Field("", validation_alias="SEN_CONSULT_DEFAULT_HUB",
                             description="Organization id of the hub a consult goes to when the request names none")
    referral_grant_days: int = Field(30, validation_alias="SEN_REFERRAL_GRANT_DAYS", gt=0,
                                     description="how long an accepted consult lets the specialist read the record")
    sla_sweep_seconds: float = Field(30.0, validation_alias="SEN_SLA_SWEEP_SECONDS", gt=0,
                                     description="how often the worker looks for consults past their due time")
    idempotency_wait_seconds: float = Field(10.0, validation_alias="SEN_IDEMPOTENCY_WAIT_SECONDS", ge=0,
                                            description="how long a retry waits for the first request's answer")

    @field_validator("sla_hours", mode="before")
    @classmethod
    def _sla(cls, value: object) -> object:
        if isinstance(value, str):
            value = json.loads(value)
        if isinstance(value, dict):
            unknown = set(value) - set(DEFAULT_SLA_HOURS)
            if unknown:
                raise ValueError(f"unknown priorities {sorted(unknown)}; use {sorted(DEFAULT_SLA_HOURS)}")
            return {**DEFAULT_SLA_HOURS, **value}
        return value

    @field_validator("on_duty_leads", mode="before")
    @classmethod
    def _leads(cls, value: object) -> object:
        if isinstance(value, str):
            value = json.loads(value) if value.strip() else {}
        if isinstance(value, dict):
            for hub, lead in value.items():
                if isinstance(lead, dict):
                    if set(lead) - {"lead", "email"}:
                        raise ValueError(f"the lead of {hub!r} takes 'lead' and 'email' only")
                    email = lead.get("email", "")
                    if not isinstance(email, str) or (email and not EMAIL.fullmatch(email)):
                        raise ValueError(f"the lead of {hub!r}: 'email' must be an e-mail address")
                    lead = lead.get("lead")
                if not (isinstance(lead, str) and lead.startswith("Practitioner/")):
                    raise ValueError(f"the lead of {hub!r} must be a Practitioner/<id> reference")
        return value


def settings_from_env() -> TeleconsultSettings:
    return load_settings(TeleconsultSettings)
