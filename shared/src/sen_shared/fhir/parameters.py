"""A Parameters resource's ``parameter`` as the operations read it: one check for every service."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .outcome import FhirError


def parameter_list(body: Mapping[str, Any]) -> list[dict[str, Any]]:
    """``body``'s ``parameter`` (a Parameters resource's): a list of objects, none when absent. Anything else
    (``5``, ``true``, a string, a list holding a number) is 400 naming ``Parameters.parameter``: iterating it
    was a 500 in teleconsult's ``$submit``, every ``$validate`` and billing's invoice ``$cancel``."""
    params = body.get("parameter")
    if params is None:
        return []
    if not isinstance(params, list) or not all(isinstance(p, dict) for p in params):
        raise FhirError("Parameters.parameter must be a list of parameters (objects)", status=400,
                        expression=["Parameters.parameter"])
    return params


IGNORED = frozenset({"_format", "_pretty"})  # every interaction's, not an operation's own


def check_known(operation: str, definition: Mapping[str, Any], query: list[tuple[str, str]], body: Any) -> None:
    """400 (``not-supported``) naming what ``operation`` was given and does not take, and what it takes: the
    ``in`` parameters of its OperationDefinition ``definition`` (the one the CapabilityStatement serves, from
    the service's spec), in the query string or a Parameters body. The definition is so the list the operation
    is held to: a parameter it leaves out is refused, never silently ignored (a filter never applied answers
    more than was asked). A body that is not a Parameters (a bare resource some operations take) is the
    operation's to check."""
    taken = [p["name"] for p in definition.get("parameter") or () if p.get("use") == "in"]
    known = IGNORED.union(taken)
    # the body's shape first: a parameter list that is no list of objects is that 400, whatever it names
    given = parameter_list(body) if isinstance(body, Mapping) and body.get("resourceType") == "Parameters" else []
    unknown = sorted({name for name, _ in query if name not in known})
    named = sorted({p["name"] for p in given if isinstance(p.get("name"), str) and p["name"] not in known})
    if not unknown and not named:
        return
    what = ", ".join(taken) if taken else "no parameters"
    raise FhirError(f"{operation} does not take {', '.join(dict.fromkeys([*unknown, *named]))}; it takes {what}",
                    status=400, code="not-supported",
                    expression=[*unknown, *(["Parameters.parameter.name"] if named else [])])
