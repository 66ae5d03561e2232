"""The small ICD-10 subset shipped with the portal (data/icd10-vi.tsv), searched accent-insensitively."""

from __future__ import annotations

import functools
import re
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


_LABEL_AFTER = re.compile(r"\s+[—–-]\s+")  # "I10 — Tăng huyết áp": a picked code, then its label
_CODE_SHAPE = re.compile(r"\b[A-Z]\d{2}(?:\.\d{1,2})?\b")
_BETWEEN = re.compile(r"[\s,;]+")


def parse_codes(text: str) -> tuple[list[Code], list[str]]:
    """The diagnoses a field of several holds, in order and each once, and what it holds that is no
    code of this subset (as typed). Codes are separated by commas, semicolons, spaces or new lines
    (``I20.0 I10 E11.9``, ``I20.0, I10``); a line ``code — label`` (the picker's) is that code, the
    label's words not read as codes (a code-shaped word in it, ``… — … I10``, is one: never dropped);
    ``i10`` is I10."""
    found: list[Code] = []
    unknown: list[str] = []
    for line in (text or "").splitlines():
        head, *label = _LABEL_AFTER.split(line, 1)
        words = [w for w in _BETWEEN.split(head) if w] + _CODE_SHAPE.findall(label[0] if label else "")
        for word in words:
            code = lookup(word.upper())
            if code is None:
                if word not in unknown:
                    unknown.append(word)
            elif code not in found:
                found.append(code)
    return found, unknown


def typed_term(text: str) -> str:
    """What the doctor is typing at the end of a field of several diagnoses, to suggest codes for:
    the last line's words after its last comma, without the whole codes before them (``I20.0, I10
    tăng`` → ``tăng``); nothing on a picked line (``code — label``)."""
    line = (text or "").splitlines()[-1] if (text or "").strip() else ""
    if _LABEL_AFTER.search(line):
        return ""
    words = re.split(r"[,;]", line)[-1].split()
    while len(words) > 1 and lookup(words[0].upper()):
        words.pop(0)
    return " ".join(words)
