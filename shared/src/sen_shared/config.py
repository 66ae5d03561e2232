"""Settings read from the environment and validated once at start.

A bad or missing setting stops the process with one line naming the variable::

    sen-ehr: configuration error: MONGO_URL is required (the MongoDB connection URL)

In production a development stand-in is refused the same way: the development issuer's key
(``SEN_DEV_JWT_KEY``), or a secret still holding a template's placeholder (``CHANGE_ME``, the
``example-...`` values of ``k8s/overlays/*/secrets.example.env``).
"""

from __future__ import annotations

import base64
import binascii
import re
import sys
from pathlib import Path
from typing import ClassVar, Literal, TypeVar
from urllib.parse import urlsplit

from pydantic import Field, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from pydantic_settings.exceptions import SettingsError

PLACEHOLDER_WORDS = ("change_me", "changeme", "example")


def is_placeholder(secret: str) -> bool:
    """A template's stand-in, not a secret: ``CHANGE_ME`` or an ``example-...`` value (a ``whsec_``
    secret's decoded bytes are read too)."""
    text = secret.lower()
    if text.startswith("whsec_"):
        try:
            text += base64.b64decode(secret[len("whsec_"):], validate=True).decode("utf-8", "replace").lower()
        except (binascii.Error, ValueError):
            pass
    return any(word in text for word in PLACEHOLDER_WORDS)


class Settings(BaseSettings):
    """What every Sen process needs; services subclass it for their own settings."""

    model_config = SettingsConfigDict(env_prefix="", case_sensitive=False, extra="ignore")
    # the fields holding a secret: in production a placeholder there is refused (services add theirs)
    secret_fields: ClassVar[tuple[str, ...]] = ()

    service: str = Field("sen", description="service name, used in logs, events and the default database")
    env: Literal["development", "production", "test"] = Field(
        "development", validation_alias="SEN_ENV", description="development, test or production")
    mongo_url: str = Field(..., validation_alias="MONGO_URL", description="the MongoDB connection URL")
    amqp_url: str = Field(..., validation_alias="AMQP_URL", description="the RabbitMQ (AMQP 0-9-1) URL")
    db_name: str = Field("", validation_alias="SEN_DB", description="database name (default sen_<service>)")
    bus_prefix: str = Field("", validation_alias="SEN_BUS_PREFIX",
                            description="prefix for the exchange and queue names (tests isolate runs with it)")
    jwks_url: str = Field("", validation_alias="SEN_JWKS_URL", description="JWKS URL of the OIDC issuer (production)")
    jwt_issuer: str = Field("sen-dev", validation_alias="SEN_JWT_ISSUER", description="expected JWT issuer")
    jwt_audience: str = Field("sen", validation_alias="SEN_JWT_AUDIENCE", description="expected JWT audience")
    dev_jwt_key: str = Field("", validation_alias="SEN_DEV_JWT_KEY",
                             description="path of the development issuer's RSA private key (PEM)")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO", validation_alias="LOG_LEVEL")
    max_body_bytes: int = Field(2_000_000, validation_alias="SEN_MAX_BODY_BYTES", gt=0,
                                description="largest request body accepted")
    http_timeout: float = Field(5.0, validation_alias="SEN_HTTP_TIMEOUT", gt=0,
                                description="timeout of calls to other services, seconds")
    portal_url: str = Field("", validation_alias="SEN_PORTAL_URL",
                            description="the portal's address for people, named by an API service's 404 at /")

    @model_validator(mode="after")
    def _check(self) -> Settings:
        if not self.db_name:
            self.db_name = f"sen_{self.service}"
        if self.env == "production" and not self.jwks_url:
            raise ValueError("SEN_JWKS_URL is required in production (the OIDC issuer's JWKS URL)")
        if self.env == "production":
            self._refuse_development_stand_ins()
        if self.env != "production" and not (self.jwks_url or self.dev_jwt_key):
            raise ValueError("SEN_DEV_JWT_KEY is required outside production when SEN_JWKS_URL is unset "
                             "(path of the development issuer's key; `make token` creates it)")
        if not self.mongo_url.startswith(("mongodb://", "mongodb+srv://")):
            raise ValueError("MONGO_URL must start with mongodb:// or mongodb+srv://")
        if not self.amqp_url.startswith(("amqp://", "amqps://")):
            raise ValueError("AMQP_URL must start with amqp:// or amqps://")
        return self

    def _refuse_development_stand_ins(self) -> None:
        if self.dev_jwt_key:
            raise ValueError("SEN_DEV_JWT_KEY is for development only: production accepts tokens of the "
                             "SEN_JWKS_URL issuer alone (unset it)")
        for field in ("mongo_url", "amqp_url"):
            password = urlsplit(getattr(self, field)).password
            if password and is_placeholder(password):
                raise ValueError(f"{_alias(type(self), field)} holds a template's placeholder password "
                                 f"(CHANGE_ME or an example): put the real one")
        for field in self.secret_fields:
            value = getattr(self, field)
            if value and is_placeholder(value):
                raise ValueError(f"{_alias(type(self), field)} holds a template's placeholder (CHANGE_ME or "
                                 f"an example): put the real secret, or leave it unset")

    @property
    def dev_key_path(self) -> Path | None:
        return Path(self.dev_jwt_key) if self.dev_jwt_key else None


S = TypeVar("S", bound=Settings)


def _alias(cls: type[Settings], field: str) -> str:
    alias = cls.model_fields[field].validation_alias
    return (alias if isinstance(alias, str) else field).upper()


def _describe(cls: type[Settings], err: ValidationError) -> str:
    first = err.errors()[0]
    loc = first.get("loc") or ()
    if loc:
        field = cls.model_fields.get(str(loc[0]))
        var = (field.validation_alias if field and isinstance(field.validation_alias, str) else str(loc[0])).upper()
        var += "".join(f".{part}" for part in loc[1:])  # inside a JSON setting: the key at fault
        what = field.description if field and field.description else ""
        if first["type"] == "missing":
            return f"{var} is required" + (f" ({what})" if what else "")
        return f"{var}: {str(first['msg']).removeprefix('Value error, ')}"
    return str(first["msg"]).removeprefix("Value error, ")


def _describe_unparsed(cls: type[Settings], err: SettingsError) -> str:
    """pydantic-settings' own error: a structured setting (a JSON map or list) that does not parse,
    an empty value included; it names the field, not the variable."""
    found = re.search(r'field "([^"]+)"', str(err))
    field = cls.model_fields.get(found.group(1)) if found else None
    if field is None:
        return str(err)
    var = (field.validation_alias if isinstance(field.validation_alias, str) else found.group(1)).upper()
    return f"{var}: not valid JSON (write it as JSON, e.g. {{}} for none, or leave it unset)"


def load_settings(cls: type[S], **overrides: object) -> S:
    """Read and validate settings, or exit the process with one clear line."""
    try:
        return cls(**overrides)
    except (ValidationError, SettingsError) as err:
        name = overrides.get("service") or cls.model_fields["service"].default
        what = _describe(cls, err) if isinstance(err, ValidationError) else _describe_unparsed(cls, err)
        sys.stderr.write(f"sen-{name}: configuration error: {what}\n")
        raise SystemExit(78) from None  # EX_CONFIG
