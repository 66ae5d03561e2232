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
