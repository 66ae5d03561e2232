"""Settings of the ehr service, read from the environment at start."""

from __future__ import annotations

from sen_shared.config import Settings, load_settings


class EhrSettings(Settings):
    service: str = "ehr"


def settings_from_env() -> EhrSettings:
    return load_settings(EhrSettings)
