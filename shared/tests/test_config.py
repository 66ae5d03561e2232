"""Settings: a bad or missing setting stops the process with one line naming the variable."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from pydantic import Field
from sen_shared.config import Settings, load_settings

GOOD = {"MONGO_URL": "mongodb://127.0.0.1:1/", "AMQP_URL": "amqp://guest:guest@127.0.0.1:1//",
        "SEN_DEV_JWT_KEY": "/tmp/none.pem"}


@pytest.fixture()
def env(monkeypatch: pytest.MonkeyPatch):
    for k in list(os.environ):
        if k.startswith(("SEN_", "MONGO_", "AMQP_")):
            monkeypatch.delenv(k)
    for k, v in GOOD.items():
        monkeypatch.setenv(k, v)
    return monkeypatch


def test_good_settings_load_with_defaults(env):
    s = load_settings(Settings, service="ehr")
    assert s.db_name == "sen_ehr"
    assert s.max_body_bytes > 0


@pytest.mark.parametrize(("var", "value", "expected"), [
    ("MONGO_URL", None, "MONGO_URL is required"),
    ("AMQP_URL", None, "AMQP_URL is required"),
    ("MONGO_URL", "postgres://x", "MONGO_URL must start with mongodb://"),
    ("SEN_MAX_BODY_BYTES", "-1", "SEN_MAX_BODY_BYTES"),
    ("SEN_ENV", "staging", "SEN_ENV"),
    ("LOG_LEVEL", "LOUD", "LOG_LEVEL"),
])
def test_bad_setting_exits_with_one_line_naming_it(env, capsys, var, value, expected):
    if value is None:
        env.delenv(var)
    else:
        env.setenv(var, value)
    with pytest.raises(SystemExit) as exc:
        load_settings(Settings, service="ehr")
    assert exc.value.code != 0
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert expected in err
    assert err.startswith("sen-ehr: configuration error:")


def test_production_needs_jwks(env, capsys):
    env.setenv("SEN_ENV", "production")
    with pytest.raises(SystemExit):
        load_settings(Settings, service="billing")
    assert "SEN_JWKS_URL" in capsys.readouterr().err


@pytest.mark.parametrize("module", ["sen_ehr.worker", "sen_portal.indexes", "sen_billing.asgi"])
def test_process_with_missing_setting_exits_nonzero_with_one_line(module):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SEN_", "MONGO_", "AMQP_"))}
    env["AMQP_URL"] = GOOD["AMQP_URL"]
    env["SEN_DEV_JWT_KEY"] = GOOD["SEN_DEV_JWT_KEY"]
    proc = subprocess.run([sys.executable, "-m", module], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert "MONGO_URL is required" in lines[0]


class _WithMap(Settings):
    names: dict[str, str] = Field(default_factory=dict, validation_alias="SEN_FACILITY_NAMES")


@pytest.mark.parametrize("value", ["", "{not json", "[1, 2"])
def test_unparsable_map_setting_exits_with_one_line_naming_it(env, capsys, value):
    # pydantic-settings raises its own SettingsError (not a ValidationError) for a JSON setting that
    # does not parse, an empty value included: still one line naming the variable, no traceback
    env.setenv("SEN_FACILITY_NAMES", value)
    with pytest.raises(SystemExit) as exc:
        load_settings(_WithMap, service="billing")
    assert exc.value.code == 78
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert err.startswith("sen-billing: configuration error: SEN_FACILITY_NAMES: not valid JSON"), err


PRODUCTION = {"SEN_ENV": "production", "SEN_JWKS_URL": "https://id.example.vn/certs"}


def test_production_starts_without_development_stand_ins(env):
    env.delenv("SEN_DEV_JWT_KEY")
    for k, v in PRODUCTION.items():
        env.setenv(k, v)
    env.setenv("MONGO_URL", "mongodb://sen:Zq8rT2vX@mongo-0.mongo:27017,mongo-1.mongo:27017/?replicaSet=rs0")
    assert load_settings(Settings, service="ehr").env == "production"


@pytest.mark.parametrize(("var", "value"), [
    ("SEN_DEV_JWT_KEY", "/var/lib/sen/dev-jwt.pem"),
    ("MONGO_URL", "mongodb://sen:CHANGE_ME@mongo-0.mongo:27017,mongo-1.mongo:27017/?replicaSet=rs0"),
    ("AMQP_URL", "amqp://sen:example-rabbit-password@rabbitmq:5672/"),
])
def test_production_refuses_development_stand_ins(env, capsys, var, value):
    env.delenv("SEN_DEV_JWT_KEY")
    for k, v in PRODUCTION.items():
        env.setenv(k, v)
    env.setenv(var, value)
    with pytest.raises(SystemExit) as exc:
        load_settings(Settings, service="ehr")
    assert exc.value.code == 78
    err = capsys.readouterr().err
    assert err.startswith(f"sen-ehr: configuration error: {var} ") and err.count("\n") == 1, err


class _WithSecret(Settings):
    secret_fields = ("token",)
    token: str = Field("", validation_alias="SEN_SOME_SECRET")


@pytest.mark.parametrize("value", ["CHANGE_ME", "example-payos-checksum-key",
                                   "whsec_ZXhhbXBsZS1zdGFuZGFyZC13ZWJob29rcy1zZWNyZXQ="])
def test_production_refuses_a_secret_left_as_the_templates_placeholder(env, capsys, value):
    env.delenv("SEN_DEV_JWT_KEY")
    for k, v in PRODUCTION.items():
        env.setenv(k, v)
    env.setenv("SEN_SOME_SECRET", value)
    with pytest.raises(SystemExit):
        load_settings(_WithSecret, service="billing")
    assert "SEN_SOME_SECRET holds a template's placeholder" in capsys.readouterr().err
    env.setenv("SEN_ENV", "development")  # the development cluster's example values are fine there
    env.setenv("SEN_DEV_JWT_KEY", "/tmp/none.pem")
    assert load_settings(_WithSecret, service="billing").token == value
