"""Settings of the teleconsult service, read from the environment at start."""

from __future__ import annotations

from sen_shared.config import Settings, load_settings

from .scheduling_settings import SchedulingSettings


class TeleconsultSettings(SchedulingSettings, Settings):  # SchedulingSettings: slots, holds, video, reminders
    service: str = "teleconsult"


def settings_from_env() -> TeleconsultSettings:
    return load_settings(TeleconsultSettings)
