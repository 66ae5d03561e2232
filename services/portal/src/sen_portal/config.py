"""Settings of the portal service, read from the environment at start."""

from __future__ import annotations

from pydantic import Field
from sen_shared.config import Settings, load_settings

from .domain.dashboard import Targets


class PortalSettings(Settings):
    service: str = "portal"
    # the health department's dashboard measures against these (domain.dashboard.Targets)
    report_facility_goal: int = Field(165, validation_alias="SEN_REPORT_FACILITY_GOAL", gt=0,
                                      description="facilities that should use teleconsultation (the province's goal)")
    report_facility_baseline: int = Field(22, validation_alias="SEN_REPORT_FACILITY_BASELINE", ge=0,
                                          description="facilities already using teleconsultation before Sen")
    report_population: int = Field(10, validation_alias="SEN_REPORT_POPULATION", gt=0,
                                   description="residents of the province (the demo's default suits its 8 patients)")

    def report_targets(self) -> Targets:
        return Targets(facility_goal=self.report_facility_goal, facility_baseline=self.report_facility_baseline,
                       population=self.report_population)


def settings_from_env() -> PortalSettings:
    return load_settings(PortalSettings)
