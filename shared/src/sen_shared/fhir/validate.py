"""Validation of incoming resources with ``fhir.resources`` (R4B models, which accept R4 clinical resources).

Only writes are validated; reads return the stored JSON as is. A failure is a
:class:`FhirError` whose OperationOutcome issues carry a FHIRPath-like
``expression`` naming the offending element (``Patient.name[0].family``).

After the model, the codes of every element with a ``required`` binding are checked against their
value set (:mod:`.bindings`): ``"gender": "banana"`` is a 400 with a ``code-invalid`` issue naming
``Patient.gender`` and the allowed codes. Before them, every narrative's XHTML (:mod:`.narrative`): no script,
event handler or ``javascript:`` link in a ``text.div``. Every write path calls :func:`validate_resource` (create,
update, the result of a patch, each entry of a transaction or batch, ``$validate``).
"""

from __future__ import annotations

import re
from functools import cache
from typing import Any

from pydantic import ValidationError

from . import bindings, narrative
from .outcome import FhirError

ID_RE = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")
MAX_ISSUES = 20


def valid_id(value: Any) -> bool:
    return isinstance(value, str) and bool(ID_RE.match(value))


def check_id(value: Any, where: str = "id") -> str:
    if not valid_id(value):
        raise FhirError(f"{where} must match [A-Za-z0-9-.]{{1,64}}", status=400, expression=[where])
    return value


@cache
def model_class(resource_type: str) -> Any:
    """The R4B model class of ``resource_type``, or None for a name that is not a resource type."""
    if not resource_type or not resource_type[0].isupper() or not resource_type.isalpha():
        return None
    from fhir.resources.R4B import get_fhir_model_class

    try:
        return get_fhir_model_class(resource_type)
    except (ValueError, KeyError, AttributeError, ImportError):
        return None


def is_resource_type(name: Any) -> bool:
    """Whether ``name`` is a FHIR resource type (of the R4B models: R4's, and the few R4B added)."""
    if not isinstance(name, str):
        return False
    cls = model_class(name)
    if cls is None:
        return False
    from fhir.resources.R4B.resource import Resource

    return issubclass(cls, Resource)


@cache
def summary_elements(resource_type: str) -> frozenset[str]:
    """Top-level elements that are part of ``_summary=true`` (isSummary in the R4 definitions)."""
    cls = model_class(resource_type)
    if cls is None:
        return frozenset({"id", "meta"})
    out = {"resourceType", "id", "meta"}
    for name, f in cls.model_fields.items():
        extra = f.json_schema_extra if isinstance(f.json_schema_extra, dict) else {}
        if extra.get("summary_element_property"):
            out.add(f.alias or name)
    return frozenset(out)


def _expression(resource_type: str, loc: tuple[Any, ...]) -> str:
    out = resource_type
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            name = str(part)
            if name.endswith("__ext"):
                name = "_" + name[: -len("__ext")]
            out += f".{name}"
    return out


def _issues(resource_type: str, err: ValidationError) -> list[dict[str, Any]]:
    issues = []
    for e in err.errors()[:MAX_ISSUES]:
        loc = tuple(p for p in e.get("loc", ()) if not (isinstance(p, str) and p.startswith("function-")))
        msg = str(e.get("msg", "invalid value")).removeprefix("Value error, ")
        code = "structure" if e.get("type") == "extra_forbidden" else (
            "required" if "missing" in str(e.get("type")) else "value")
        issues.append({"severity": "error", "code": code, "diagnostics": msg,
                       "expression": [_expression(resource_type, loc)]})
    return issues or [{"severity": "error", "code": "invalid", "diagnostics": "the resource is not valid"}]


def validate_resource(resource: Any, *, expected_type: str | None = None, where: str = "") -> str:
    """Check ``resource`` against its R4B model; return its type. Raises :class:`FhirError` (400)."""
    if not isinstance(resource, dict):
        raise FhirError("the body must be a JSON object holding a FHIR resource", status=400,
                        expression=[where] if where else None)
    rtype = resource.get("resourceType")
    if not isinstance(rtype, str) or not rtype:
        raise FhirError("the resource has no resourceType", status=400,
                        expression=[f"{where}.resourceType" if where else "resourceType"])
    if expected_type and rtype != expected_type:
        raise FhirError(f"resourceType {rtype!r} does not match the endpoint's type {expected_type!r}",
                        status=400, expression=[f"{where}.resourceType" if where else "resourceType"])
    cls = model_class(rtype)
    if cls is None:
        raise FhirError(f"unknown resource type {rtype!r}", status=400,
                        expression=[f"{where}.resourceType" if where else "resourceType"])
    if "id" in resource and not valid_id(resource["id"]):
        raise FhirError(_placed("id must match [A-Za-z0-9-.]{1,64}", where), status=400,
                        expression=[_at(where, rtype, f"{rtype}.id")])
    try:
        cls.model_validate(resource)
    except ValidationError as err:
        issues = _located(_issues(rtype, err), where, rtype)
        raise FhirError(issues[0]["diagnostics"], status=400, issues=issues,
                        expression=issues[0].get("expression")) from None
    except (ValueError, TypeError, KeyError, AttributeError, RecursionError) as err:
        raise FhirError(_placed(f"the resource is not valid: {err}", where), status=400,
                        expression=[where or rtype]) from None
    issues = narrative.issues(resource, rtype)
    if issues:  # a script, an event handler, a javascript: link in text.div: never stored, never served
        issues = _located(issues, where, rtype)
        raise FhirError(issues[0]["diagnostics"], status=400, code="invariant", issues=issues,
                        expression=issues[0]["expression"])
    issues = bindings.check(resource)
    if issues:
        issues = _located(issues, where, rtype)
        raise FhirError(issues[0]["diagnostics"], status=400, code="code-invalid", issues=issues,
                        expression=issues[0]["expression"])
    return rtype


def _placed(diagnostics: str, where: str) -> str:
    return f"{where}: {diagnostics}" if where else diagnostics


def _at(where: str, rtype: str, expression: str) -> str:
    """``Patient.name[0]`` of a resource found at ``where`` (``Bundle.entry[3].resource``): there."""
    if not where:
        return expression
    return where + expression[len(rtype):] if expression.startswith(rtype) else f"{where}.{expression}"


def _located(issues: list[dict[str, Any]], where: str, rtype: str) -> list[dict[str, Any]]:
    """The issues of a resource found at ``where`` (a transaction's entry): each says where, in its text and
    its expression (``Bundle.entry[3].resource.birthDate``), so a 200-entry Bundle's author finds the entry."""
    if where:
        for issue in issues:
            issue["diagnostics"] = _placed(str(issue.get("diagnostics", "")), where)
            if issue.get("expression"):
                issue["expression"] = [_at(where, rtype, str(e)) for e in issue["expression"]]
    return issues
