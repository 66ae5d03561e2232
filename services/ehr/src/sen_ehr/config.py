"""Settings of the ehr service, read from the environment at start."""

from __future__ import annotations

from pydantic import Field
from sen_shared.config import Settings, load_settings


class EhrSettings(Settings):
    service: str = "ehr"
    take_on_max_failures: int = Field(
        5, validation_alias="SEN_TAKE_ON_MAX_FAILURES", gt=0,
        description="wrong CCCD/BHYT numbers a user may give $take-on within the window before 429")
    take_on_failure_window: float = Field(
        900.0, validation_alias="SEN_TAKE_ON_FAILURE_WINDOW_SECONDS", gt=0,
        description="the window the wrong numbers of $take-on are counted in, seconds")


def settings_from_env() -> EhrSettings:
    return load_settings(EhrSettings)
