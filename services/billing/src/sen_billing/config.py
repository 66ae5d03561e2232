"""Settings of the billing service, read from the environment at start."""

from __future__ import annotations

from sen_shared.config import Settings, load_settings


class BillingSettings(Settings):
    service: str = "billing"


def settings_from_env() -> BillingSettings:
    return load_settings(BillingSettings)
