"""A person's name as one line of text: what a Reference's ``display`` or a page shows.

One rule for every service: the resource's first ``HumanName``; its ``text`` when given, else
``family`` then the ``given`` names (the Vietnamese order: "Nguyễn Văn An"), with the
diacritics as the record holds them and runs of white space made one space.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

DISPLAY_MAX = 200  # the longest display a Sen service keeps or sends (event schemas say the same)


def one_line(text: Any, limit: int = DISPLAY_MAX) -> str:
    """``text`` with its white space made single spaces, cut to ``limit`` characters; '' for a non-string."""
    return " ".join(text.split())[:limit].rstrip() if isinstance(text, str) else ""


def person_name(resource: Mapping[str, Any] | None) -> str:
    """The first name of a Patient, Practitioner or RelatedPerson as one line; '' when it has none."""
    names = (resource or {}).get("name") if isinstance(resource, Mapping) else None
    first = names[0] if isinstance(names, list) and names and isinstance(names[0], Mapping) else None
    if first is None:
        return ""
    if one_line(first.get("text")):
        return one_line(first["text"])
    given = first.get("given") if isinstance(first.get("given"), list) else []
    return one_line(" ".join(p for p in [first.get("family"), *given] if isinstance(p, str)))
