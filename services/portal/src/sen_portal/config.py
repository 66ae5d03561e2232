"""Settings of the portal service, read from the environment at start."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar
from urllib.parse import parse_qsl, urlsplit, urlunsplit

from pydantic import Field, model_validator
from sen_shared.config import Settings, load_settings

from .domain.dashboard import Targets

# the development sign-in's users a province may make its own people (SEN_PORTAL_DEMO_USERS); the admin is nobody's
DEMO_PEOPLE = ("clinic", "doctor", "cashier", "health-dept")


class PortalSettings(Settings):
    service: str = "portal"
    secret_fields: ClassVar[tuple[str, ...]] = ("secret_key", "oidc_client_secret")
    # the health department's dashboard measures against these (domain.dashboard.Targets)
    report_facility_goal: int = Field(165, validation_alias="SEN_REPORT_FACILITY_GOAL", gt=0,
                                      description="facilities that should use teleconsultation (the province's goal)")
    report_facility_baseline: int = Field(22, validation_alias="SEN_REPORT_FACILITY_BASELINE", ge=0,
                                          description="facilities already using teleconsultation before Sen")
    report_baseline_facilities: list[str] = Field(
        default_factory=list, validation_alias="SEN_REPORT_BASELINE_FACILITIES",
        description='JSON ["<Organization id>", ...]: the facilities already using teleconsultation before Sen, '
                    "by name (then SEN_REPORT_FACILITY_BASELINE is how many): one of them requesting consults "
                    "through Sen is not counted again as a new facility on the dashboard")
    report_population: int = Field(10, validation_alias="SEN_REPORT_POPULATION", gt=0,
                                   description="residents of the province (the demo's default suits its 8 patients)")
    report_district_populations: dict[str, int] = Field(
        default_factory=dict, validation_alias="SEN_REPORT_DISTRICT_POPULATIONS",
        description='JSON {"<district, as addresses name it>": <residents>}: each district\'s EHR coverage on the '
                    "dashboard (a district not listed: its records without a share); at most the province's in all")
    report_consumers: int = Field(4, validation_alias="SEN_REPORT_CONSUMERS", ge=1, le=32,
                                  description="consumers of portal.reporting in the worker (their facts are "
                                              "inserted together)")

    # the web pages (sen_portal.web)
    ehr_url: str = Field("http://127.0.0.1:8081", validation_alias="SEN_EHR_URL", description="the EHR's base URL")
    teleconsult_url: str = Field("http://127.0.0.1:8082", validation_alias="SEN_TELECONSULT_URL",
                                 description="the teleconsult service's base URL")
    billing_url: str = Field("http://127.0.0.1:8083", validation_alias="SEN_BILLING_URL",
                             description="the billing service's base URL")
    hub: str = Field("bvdk-dong-thap", validation_alias="SEN_PORTAL_HUB",
                     description="the hub Organization id clinics send their consults to (the demo hub)")
    demo_users: dict[str, dict[str, str]] = Field(
        default_factory=dict, validation_alias="SEN_PORTAL_DEMO_USERS",
        description='development sign-in only: JSON {"<demo user>": {"name": "...", "facility": "<Organization id>", '
                    '"practitioner": "<Practitioner id>"}}, the demo users (clinic, doctor, cashier, health-dept) as '
                    "people of the province make run serves (its province file's demoUsers; a user or a field not "
                    "given: the demo province's); their passwords are unchanged")
    demo_password_hashes: dict[str, str] = Field(
        default_factory=dict, validation_alias="SEN_PORTAL_DEMO_PASSWORD_HASHES",
        description='tests only, refused in production: JSON {"<demo user>": "<werkzeug.security hash>"}, the same '
                    "password hashed with cheap scrypt parameters in place of the built-in hash (scrypt n=2^15, "
                    "r=8, p=1: ~0.1 s a check, hundreds of sign-ins in the tests); an unknown name is checked "
                    "against the admin's")
    secret_key: str = Field("", validation_alias="SEN_PORTAL_SECRET_KEY",
                            description="signs the session cookie (required in production; in development "
                                        "derived from the development issuer's key so every worker shares it)")
    session_minutes: int = Field(480, validation_alias="SEN_PORTAL_SESSION_MINUTES", gt=0,
                                 description="a sign-in lasts this long, then the user signs in again")
    idle_minutes: int = Field(60, validation_alias="SEN_PORTAL_IDLE_MINUTES", gt=0,
                              description="a session unused this long has expired")
    oidc_issuer: str = Field("", validation_alias="SEN_OIDC_ISSUER",
                             description="OIDC issuer URL: sign-in by authorization code + PKCE (empty: "
                                         "development sign-in with the demo users, never in production)")
    oidc_client_id: str = Field("", validation_alias="SEN_OIDC_CLIENT_ID", description="the portal's OIDC client id")
    oidc_client_secret: str = Field("", validation_alias="SEN_OIDC_CLIENT_SECRET",
                                    description="the portal's OIDC client secret (empty: a public client)")
    assets_dir: str = Field("", validation_alias="SEN_PORTAL_ASSETS",
                            description="the npm packages the pages use (default services/portal/node_modules)")
    portal_cache_seconds: float = Field(3.0, validation_alias="SEN_PORTAL_CACHE_SECONDS", ge=0, le=60,
                                        description="a page reuses a back-end answer this long for the same user "
                                                    "(worklist, chart, consult, invoice; never a payment status); "
                                                    "0: only requests at the same moment share one")
    # None (not given) becomes whether this is production once read (_check_portal)
    cookie_secure: bool | None = Field(None, validation_alias="SEN_PORTAL_COOKIE_SECURE",
                                       description="send the session cookie over HTTPS only (default: true in "
                                                   "production, false elsewhere; false in production only for a "
                                                   "lab behind plain HTTP, said by a warning at start)")

    @model_validator(mode="after")
    def _check_portal(self) -> PortalSettings:
        self.mongo_url = _monitored(self.mongo_url)
        if self.cookie_secure is None:  # not given: production's cookie goes over HTTPS only
            self.cookie_secure = self.env == "production"
        if self.env == "production" and not self.secret_key:
            raise ValueError("SEN_PORTAL_SECRET_KEY is required in production (signs the session cookie)")
        if self.env == "production" and "hub" not in self.model_fields_set:
            raise ValueError("SEN_PORTAL_HUB is required in production (the Organization id of the hub clinics "
                             "send their consults to; bvdk-dong-thap is the demo province's)")
        if self.env == "production":  # the dashboard's figures are a province's own: the demo's are no default
            named_baseline = {"report_facility_baseline", "report_baseline_facilities"} & self.model_fields_set
            for field, variable, what in (
                    ("report_facility_goal", "SEN_REPORT_FACILITY_GOAL",
                     "the facilities your province's teleconsultation should reach; 165 is the demo province's"),
                    ("report_population", "SEN_REPORT_POPULATION", "your province's residents, the EHR coverage's "
                                                                   "denominator; 10 is the demo's")):
                if field not in self.model_fields_set:
                    raise ValueError(f"{variable} is required in production ({what}; "
                                     "'deploy/local/province.py dotenv <province file>' prints it)")
            if not named_baseline:
                raise ValueError("SEN_REPORT_BASELINE_FACILITIES or SEN_REPORT_FACILITY_BASELINE is required in "
                                 "production (the facilities using teleconsultation before Sen, by id or how many; "
                                 "22 is the demo province's)")
        if self.env == "production" and not (self.oidc_issuer and self.oidc_client_id):
            raise ValueError("SEN_OIDC_ISSUER and SEN_OIDC_CLIENT_ID are required in production "
                             "(the demo sign-in is for development only)")
        if self.env == "production" and self.demo_password_hashes:
            raise ValueError("SEN_PORTAL_DEMO_PASSWORD_HASHES is for tests only, never in production")
        for who, pwhash in self.demo_password_hashes.items():
            if who not in DEMO_PEOPLE + ("admin",) or not pwhash.startswith("scrypt:") or pwhash.count("$") != 2:
                raise ValueError(f"SEN_PORTAL_DEMO_PASSWORD_HASHES: {who!r} must be one of "
                                 f"{', '.join(DEMO_PEOPLE + ('admin',))}, with a scrypt hash of werkzeug.security "
                                 "('scrypt:<n>:<r>:<p>$<salt>$<hash>')")
        for who, fields in self.demo_users.items():
            if who not in DEMO_PEOPLE or not set(fields) <= {"name", "facility", "practitioner"} \
                    or not all(isinstance(v, str) and v.strip() for v in fields.values()):
                raise ValueError(f"SEN_PORTAL_DEMO_USERS: {who!r} must be one of {', '.join(DEMO_PEOPLE)}, with a "
                                 "name, facility or practitioner (non-empty strings) only")
        bad = sorted(d for d, n in self.report_district_populations.items() if not d.strip() or n <= 0)
        if bad:
            raise ValueError(f"SEN_REPORT_DISTRICT_POPULATIONS: a district needs a name and a population above 0 "
                             f"({', '.join(repr(d) for d in bad)})")
        named = {f.strip().removeprefix("Organization/") for f in self.report_baseline_facilities}
        if "" in named:
            raise ValueError("SEN_REPORT_BASELINE_FACILITIES: an empty facility id")
        if named and "report_facility_baseline" in self.model_fields_set \
                and self.report_facility_baseline != len(named):
            raise ValueError(f"SEN_REPORT_FACILITY_BASELINE is {self.report_facility_baseline} but "
                             f"SEN_REPORT_BASELINE_FACILITIES names {len(named)} facilities: set one of them")
        if named:
            self.report_facility_baseline = len(named)
        in_districts = sum(self.report_district_populations.values())
        if in_districts > self.report_population:
            raise ValueError(f"SEN_REPORT_DISTRICT_POPULATIONS add up to {in_districts} residents, more than the "
                             f"province's SEN_REPORT_POPULATION ({self.report_population})")
        return self

    def assets_path(self) -> Path:
        if self.assets_dir:
            return Path(self.assets_dir)
        return Path(__file__).resolve().parents[2] / "node_modules"

    def report_targets(self) -> Targets:
        return Targets(facility_goal=self.report_facility_goal, facility_baseline=self.report_facility_baseline,
                       baseline_facilities=frozenset(f.strip().removeprefix("Organization/")
                                                     for f in self.report_baseline_facilities),
                       population=self.report_population, district_populations=self.report_district_populations)


def _monitored(url: str) -> str:
    """``url`` with pymongo's monitor checking its servers every ``portal_db.HEARTBEAT_MS`` (``heartbeatFrequencyMS``),
    unless it says how often itself: the portal's pages are not sent to a database its client's monitor knows out of
    reach, and ask it again once the monitor finds it back (``sen_portal.portal_db``), so pymongo's 10 s would be
    how long a page may say "Service unavailable" after the database came back."""
    from .portal_db import HEARTBEAT_MS

    parts = urlsplit(url)
    if any(key.lower() == "heartbeatfrequencyms" for key, _ in parse_qsl(parts.query)):
        return url
    query = f"{parts.query}&" if parts.query else ""
    return urlunsplit(parts._replace(path=parts.path or "/", query=f"{query}heartbeatFrequencyMS={HEARTBEAT_MS}"))


def settings_from_env() -> PortalSettings:
    return load_settings(PortalSettings)
