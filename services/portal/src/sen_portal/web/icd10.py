"""The small ICD-10 subset shipped with the portal (data/icd10-vi.tsv), searched accent-insensitively."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flask_babel import get_locale
from sen_shared.fhir.search.text import normalize

from .formatting import codeable

DATA = Path(__file__).resolve().parent / "data" / "icd10-vi.tsv"
SYSTEM = "http://hl7.org/fhir/sid/icd-10"


@dataclass(frozen=True)
class Code:
    code: str
    vi: str
    en: str

    def label(self, lang: str) -> str:
        return self.en if lang == "en" else self.vi


@functools.cache
def codes() -> tuple[Code, ...]:
    out = []
    for line in DATA.read_text(encoding="utf-8").splitlines()[2:]:
        if line and not line.startswith("#"):
            code, vi, en = line.split("\t")
            out.append(Code(code, vi, en))
    return tuple(out)


@functools.cache
def _by_code() -> dict[str, Code]:
    return {c.code: c for c in codes()}


def lookup(code: str) -> Code | None:
    return _by_code().get(code)


def label(value: dict[str, Any] | None, lang: str | None = None) -> str:
    """A CodeableConcept (a consult's reason, a conclusion) as the page's language reads it.

    An ICD-10 coding whose code this subset knows is shown by the subset's label in ``lang`` (the
    page's locale when not given): the reason stored at submission carries the Vietnamese label as
    its text, which an English page would otherwise show. A code not in the subset (or no ICD-10
    coding) shows the stored text, as :func:`formatting.codeable` does."""
    for coding in (value or {}).get("coding") or []:
        if coding.get("system") in (SYSTEM, None) and (hit := lookup(str(coding.get("code") or ""))):
            if lang is None:
                locale = get_locale()
                lang = locale.language if locale else "vi"
            return hit.label(lang)
    return codeable(value)


def search(query: str, limit: int = 8) -> list[Code]:
    """Codes whose code starts with the query, or whose labels hold every word of it."""
    q = normalize(query)
    if not q:
        return []
    words = q.split()
    hits = []
    for c in codes():
        hay = normalize(f"{c.code} {c.vi} {c.en}")
        if c.code.lower().startswith(q) or all(w in hay for w in words):
            hits.append(c)
    return hits[:limit]


def install(app: Any) -> None:
    app.jinja_env.filters["icd10"] = label


def parse_field(value: str) -> Code | None:
    """The code at the start of what the reason field holds ('I10 — Tăng huyết áp ...')."""
    return lookup(value.strip().split(" ", 1)[0]) if value else None
