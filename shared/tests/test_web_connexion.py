"""connexion, compiled once: the parameter validator gives connexion's answers; Flask keeps no sessions."""

from __future__ import annotations

import pytest
from connexion.validators import ParameterValidator
from sen_shared.web import CompiledParameterValidator

PARAMS = [
    {"name": "id", "in": "path", "required": True, "schema": {"type": "string", "pattern": "^[A-Za-z0-9.-]{1,64}$"}},
    {"name": "_count", "in": "query", "schema": {"type": "integer", "minimum": 0, "maximum": 1000}},
    {"name": "when", "in": "query", "schema": {"type": "string", "format": "date"}},
    {"name": "x", "in": "query", "required": True, "schema": {"type": "string", "nullable": True}},
]
VALUES = ["abc-1", "bad id!", "a" * 65, 5, -1, 5000, "2024-02-30", "2024-02-03", None, ""]


@pytest.mark.parametrize("param", PARAMS, ids=[p["name"] for p in PARAMS])
def test_same_verdicts_as_connexion_in_words_a_caller_can_act_on(param) -> None:
    """connexion's verdict on every value; the refusal names the parameter and the rule, not jsonschema's dump
    of the schema and the instance (3bc726c)."""
    for value in VALUES:
        for _ in range(2):  # the second time from the compiled validator
            ours = CompiledParameterValidator.validate_parameter(param["in"], value, param)
            theirs = ParameterValidator.validate_parameter(param["in"], value, param)
            assert (ours is None) == (theirs is None), value
            if ours is not None:
                assert f"parameter '{param['name']}'" in ours and "Failed validating" not in ours, ours


def test_each_parameter_is_compiled_once() -> None:
    CompiledParameterValidator._compiled.clear()
    param = {"name": "id", "in": "path", "schema": {"type": "string", "maxLength": 3}}
    for value in ["a", "b", "abcd"]:
        CompiledParameterValidator.validate_parameter("path", value, param)
    assert len(CompiledParameterValidator._compiled) == 1
    other = {"name": "id", "in": "path", "schema": {"type": "string", "maxLength": 1}}
    assert CompiledParameterValidator.validate_parameter("path", "ab", other) is not None
    assert CompiledParameterValidator.validate_parameter("path", "ab", param) is None


def test_requests_share_one_null_session_that_refuses_writes() -> None:
    import flask
    from sen_shared.web import NoSessions

    app = flask.Flask("sessions-test")
    app.session_interface = NoSessions()
    seen = []

    @app.get("/")
    def view():
        seen.append(flask.session._get_current_object())  # the object behind the proxy
        try:
            flask.session["x"] = 1
        except RuntimeError:
            return "refused"
        return "stored"

    with app.test_client() as c:
        assert c.get("/").text == "refused" and c.get("/").text == "refused"
        assert "set-cookie" not in {k.lower() for k in c.get("/").headers.keys()}
    assert seen[0] is seen[1]
