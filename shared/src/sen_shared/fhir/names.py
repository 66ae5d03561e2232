"""A person's name as one line of text: what a Reference's ``display`` or a page shows.

One rule for every service: the resource's first ``HumanName``; its ``text`` when given, else
``family`` then the ``given`` names (the Vietnamese order: "Nguyễn Văn An"), with the
diacritics as the record holds them and runs of white space made one space.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sen_shared.fhir.search.text import normalize, words

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


# the professional titles written before a Vietnamese health worker's name, as words once dots, case and
# diacritics are gone: "BS." (doctor), "BS.CKI"/"BS.CKII"/"BSCK2" (specialist levels), "BSNT" (resident),
# "ThS.BS.", "TS.BS.", "PGS.TS.", "GS.TS." (degrees and ranks), "YS." (assistant doctor), "ĐD." (nurse),
# "KTV" (technician), "DS." (pharmacist), "CN." (bachelor), "NHS"/"HS" (midwife), "TTND"/"TTƯT" (honours)
TITLE_WORDS = frozenset({
    "bs", "bsnt", "ck", "cki", "ckii", "ck1", "ck2", "i", "ii", "bscki", "bsckii", "bsck1", "bsck2",
    "ths", "ts", "pgs", "gs", "thsbs", "tsbs", "pgsts", "gsts", "ys", "dd", "ktv", "ds", "cn", "nhs", "hs",
    "ttnd", "ttut", "dr", "prof"})
# what parts a "<name> — <role>" entry of the minutes' participants (an em dash, an en dash or a spaced hyphen)
ROLE_SEPARATORS = ("—", " – ", " - ")


def name_key(text: str) -> str:
    """A person's name as compared, not shown: without the titles before it, the dots, case, diacritics and
    extra spaces ("BS.CKII  Nguyễn Văn An" and "bs. nguyen van an" are both "nguyen van an")."""
    found = words(normalize(text or ""))
    at = 0
    while at < len(found) and found[at] in TITLE_WORDS:
        at += 1
    return " ".join(found[at:])


def same_person(a: str, b: str) -> bool:
    """Two written names of one person, whatever title either carries: the same name once compared
    (:func:`name_key`), or one the other's last two or more words ("Văn An", "Nguyễn Văn An")."""
    short, long_ = sorted((name_key(a), name_key(b)), key=len)
    return bool(short) and (short == long_ or (len(short.split()) >= 2 and long_.endswith(" " + short)))


def name_and_role(entry: str) -> tuple[str, str | None]:
    """A participants entry "<name> — <role>" as (name, role); (the whole entry, None) without a separator."""
    for sep in ROLE_SEPARATORS:
        name, found, role = entry.partition(sep)
        if found:
            return name.strip(), role.strip()
    return entry.strip(), None
