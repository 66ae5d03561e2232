"""The small ICD-10 subset shipped with the portal (data/icd10-vi.tsv), searched accent-insensitively."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

from sen_shared.fhir.search.text import normalize

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


def lookup(code: str) -> Code | None:
    return next((c for c in codes() if c.code == code), None)


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


def parse_field(value: str) -> Code | None:
    """The code at the start of what the reason field holds ('I10 — Tăng huyết áp ...')."""
    return lookup(value.strip().split(" ", 1)[0]) if value else None
