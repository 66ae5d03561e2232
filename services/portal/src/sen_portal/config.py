"""Settings of the portal service, read from the environment at start."""

from __future__ import annotations

from sen_shared.config import Settings, load_settings


class PortalSettings(Settings):
    service: str = "portal"


def settings_from_env() -> PortalSettings:
    return load_settings(PortalSettings)
