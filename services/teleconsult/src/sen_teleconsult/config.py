"""Settings of the teleconsult service, read from the environment at start."""

from __future__ import annotations

from sen_shared.config import Settings, load_settings


class TeleconsultSettings(Settings):
    service: str = "teleconsult"


def settings_from_env() -> TeleconsultSettings:
    return load_settings(TeleconsultSettings)
