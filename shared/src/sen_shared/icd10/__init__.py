"""Sen's ICD-10 list, one for every service: WHO ICD-10 2019 with the codes of earlier WHO editions
still coded in Vietnam, Vietnamese and English titles (``data/icd10-vi.tsv``, built by
``data/icd10-build.py``; sources and licences in ``data/icd10-NOTICE.md``).

:func:`is_code` is what a service checks a diagnosis against (teleconsult's ``$submit`` reason and
``$complete`` conclusion): a code the list holds exactly as listed (``I21.9``, ``B18.00``), never a
chapter or block, an ICD-10-CM code (``E11.65``) or a code of the right shape WHO does not have
(``I21.99``). The list is read once, on first use (~12,600 lines, tens of milliseconds). The
portal's search (``sen_portal.web.icd10``) indexes the same rows (:func:`rows`) and the everyday
names of ``data/icd10-synonyms.tsv`` (:data:`SYNONYMS`) and their English twins of
``data/icd10-synonyms-en.tsv`` (:data:`SYNONYMS_EN`: "hypertension" is I10 first)."""

from __future__ import annotations

import functools
from importlib import resources
from importlib.resources.abc import Traversable
from typing import NamedTuple

SYSTEM = "http://hl7.org/fhir/sid/icd-10"
CODED = ("category", "subcategory")  # what a diagnosis is coded to; chapters and blocks only group them
_DATA = resources.files(__package__).joinpath("data")
LIST = _DATA.joinpath("icd10-vi.tsv")
SYNONYMS = _DATA.joinpath("icd10-synonyms.tsv")
SYNONYMS_EN = _DATA.joinpath("icd10-synonyms-en.tsv")


class Row(NamedTuple):
    code: str
    kind: str  # chapter, block, category, subcategory
    vi: str  # empty where the list has no Vietnamese title
    en: str
    edition: str  # "2019", or "pre-2019" for a code WHO 2019 no longer lists


def read_tsv(path: Traversable) -> list[list[str]]:
    """A data file's rows, split on tabs: its ``#`` comment lines and its header line left out."""
    lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line and not line.startswith("#")]
    return [line.split("\t") for line in lines[1:]]


@functools.cache
def rows() -> tuple[Row, ...]:
    """Every entry of the list (chapters and blocks too), in its order."""
    return tuple(Row(code, kind, vi, en, edition) for code, kind, vi, en, edition in read_tsv(LIST))


@functools.cache
def _titles() -> dict[str, Row]:
    return {r.code: r for r in rows() if r.kind in CODED}


@functools.cache
def codes() -> frozenset[str]:
    """The codes a diagnosis can be coded to (three-, four- and five-character), as listed."""
    return frozenset(_titles())


def is_code(code: object) -> bool:
    """Whether ``code`` is a diagnosis code of the list, exactly as listed (``I21.9``; not ``I219``)."""
    return isinstance(code, str) and code in codes()


def title(code: str, lang: str = "vi") -> str | None:
    """The code's title in ``lang`` (``vi`` or ``en``; the English one where the list has no
    Vietnamese title), or None for a code not in the list."""
    row = _titles().get(code)
    if row is None:
        return None
    return row.en if lang == "en" or not row.vi else row.vi
