"""Sen's ICD-10 list as the portal uses it (:mod:`sen_shared.icd10`: WHO ICD-10 with Vietnamese and
English titles, the list teleconsult checks codes against), indexed once, and its accent-insensitive
search with everyday synonyms (the shared ``data/icd10-synonyms.tsv``, and ``data/icd10-synonyms-en.tsv`` for
English: "hypertension" is I10 first, not I15.1 "Hypertension secondary to ...")."""

from __future__ import annotations

import bisect
import functools
import heapq
import re
from dataclasses import dataclass
from typing import Any

from flask_babel import get_locale
from sen_shared import icd10 as shared
from sen_shared.fhir.search.text import normalize, words

from .formatting import codeable

SYSTEM = shared.SYSTEM
CODED = shared.CODED


@dataclass(frozen=True, slots=True)
class Code:
    code: str
    vi: str
    en: str
    kind: str = "category"
    edition: str = "2019"

    def label(self, lang: str) -> str:
        """The title in ``lang``; the English one where the list has no Vietnamese title."""
        return self.en if lang == "en" or not self.vi else self.vi


# chapters a general query does not mean: pregnancy (O), perinatal (P), external causes (V-Y), contacts
# with health services and screening (Z)
SPECIAL_CHAPTERS = frozenset("OPVWXYZ")
# the letters of an English everyday name's last word that stand for it while it is typed (:meth:`_Index.__init__`)
_EN_LEAST = 4
# a title's first word that adds nothing to the disease's name ("Bệnh đái tháo đường ..." is "đái tháo đường ...")
_LEAD = ("benh", "cac", "the", "loai")
# the words after which a title says what the disease is WITHOUT (:meth:`_Index._only_negated`)
_NEGATIONS = frozenset(("khong", "without"))
# what stands before and after a subject a chapter's title names on its own ("Bệnh của tai và xương chũm": the
# ear; "Bệnh máu, cơ quan tạo máu …": the blood), not a syllable of a longer word ("tiêu hóa", "dinh dưỡng", "hô
# hấp"): the title's start, "bệnh", "của", a comma or "và" before it; "và", a comma or the title's end after it
_SUBJECT_BEFORE = frozenset(("benh", "cua", ",", "va"))
_SUBJECT_AFTER = frozenset((",", "va"))


def _plain(title_words: list[str]) -> list[str]:
    """A title's words without its leading "bệnh" (disease), "các thể loại" (the kinds of)."""
    at = 0
    while at < len(title_words) - 1 and title_words[at] in _LEAD:
        at += 1
    return title_words[at:]


class _Index:
    """The list, and what a search needs, built once: codes in order (prefix search by bisect), every
    title word's position list, and the synonyms' words."""

    def __init__(self) -> None:
        self.all = tuple(Code(r.code, r.vi, r.en, r.kind, r.edition) for r in shared.rows())
        self.coded = tuple(c for c in self.all if c.kind in CODED)
        self.by_code = {c.code: c for c in self.coded}
        keys = sorted((c.code.replace(".", ""), i) for i, c in enumerate(self.coded))
        self.code_keys = [k for k, _ in keys]
        self.code_pos = [i for _, i in keys]
        postings: dict[str, set[int]] = {}
        self.titles: list[tuple[str, ...]] = []  # each title's words without accents, Vietnamese then English
        for i, c in enumerate(self.coded):
            vi_words = words(normalize(c.vi))
            en_words = words(normalize(c.en))
            self.titles.append(tuple(" ".join(_plain(t)) for t in (vi_words, en_words) if t))
            for w in {*vi_words, *en_words}:
                postings.setdefault(w, set()).add(i)
        # the Vietnamese everyday names, then the English ones; each with the fewest letters of its last word that
        # stand for it while it is being typed ("tieu du"): an English name's four ("hype", never "di": a
        # Vietnamese "dị ứng" being typed is no "diabetes")
        synonyms = [(words(normalize(term)), codes.split(), least)
                    for source, least in ((shared.SYNONYMS, 2), (shared.SYNONYMS_EN, _EN_LEAST))
                    for term, codes, _title in shared.read_tsv(source)]
        self.synonyms = sorted(synonyms, key=lambda s: -len(s[0]))  # "sốt xuất huyết" before "sốt"
        place = _preferred_places([targets for _term, targets, _least in synonyms])
        by_rank = sorted(range(len(self.coded)), key=lambda i: (
            self.coded[i].edition != "2019", len(self.coded[i].code) > 3, _place(place, self.coded[i].code)))
        # a title hit's place among equals: current edition; categories in the list's order (E10, E11 ...) but
        # for the codes an everyday name lists, which take their places in its order (E11, E10 ...); their
        # subcategories after them, in the same order (I15.0, I15.1, I15.2, I15.8 "other", I15.9
        # "unspecified"; E11.0 ... E11.9 before E10.0 ...), never by their titles' length (I15.8 "Tăng huyết áp
        # thứ phát khác" came before I15.0 "Tăng huyết áp do nguyên nhân mạch thận": fewer words)
        self.rank = [0] * len(self.coded)
        for at, i in enumerate(by_rank):
            self.rank[i] = at
        self.tokens = sorted(postings)
        self.postings = [tuple(sorted(postings[t])) for t in self.tokens]  # a tuple: a quarter of a set's bytes
        # each chapter's codes (from its first block's first category to its last block's last) and its
        # Vietnamese title's words without accents, commas kept (:meth:`chapter_naming`)
        self.chapters: list[tuple[str, str, tuple[str, ...]]] = []
        for r in shared.rows():
            if r.kind == "chapter":
                self.chapters.append(("", "", tuple(re.findall(r"[^\W_]+|,", normalize(r.vi)))))
            elif r.kind == "block" and self.chapters and "-" in r.code:
                first, last = r.code.split("-", 1)
                start, _end, title = self.chapters[-1]
                self.chapters[-1] = (start or first, last, title)

    def title_key(self, i: int, typed: str, named: frozenset[str] = frozenset()) -> tuple[int, ...]:
        """Where a title hit goes for the typed words (accents off, joined by spaces): a title that IS
        them (``suy tim``: I50, I50.9), then one starting with them, then one holding them in that
        order, then one holding them anywhere; codes of a chapter of its own (pregnancy O, perinatal P,
        external causes V-Y, contacts and screening Z) after the others holding the words alike unless the
        title is what was typed (``đái tháo đường``: E10-E14 before O24.4 gestational, P70.2 neonatal, Z13.1
        screening), but before the titles holding them only apart (``tai nan``: V87 "Tai nạn giao thông …"
        before F31.4 "… hiện tại giai đoạn nặng …"); a title holding them only after "không" after those
        holding them apart; then the families of ``named`` (three-character codes: the everyday
        names' typed, the categories the words find: "viêm phổi" J18.1, J15.0 … before B01.2 "Viêm phổi
        do thủy đậu", "gãy xương" S22.2 before M84.1 "Gãy xương không liền"); then :attr:`rank` (the
        list's order: I15.0, I15.1, I15.2, I15.8, I15.9)."""
        tier = 3
        for title in self.titles[i]:
            if title == typed:
                tier = 0
                break
            if title.startswith(typed):
                tier = min(tier, 1)
            elif f" {typed}" in f" {title}":
                tier = min(tier, 2)
        special = tier > 0 and self.coded[i].code[0] in SPECIAL_CHAPTERS
        negated = self._only_negated(i, typed)
        # the titles holding the words as typed; a chapter of its own's holding them so ("tai nan": V87 "Tai nạn
        # giao thông …"); those holding them apart ("tại" … "nặng": F31.4); those holding them only after
        # "không"; a chapter of its own's holding them apart, then only after "không"
        group = (4 if tier == 3 else 1) if special and not negated else 5 if special else \
            3 if negated else 2 if tier == 3 else 0
        code = self.coded[i].code
        return group, negated, tier, code[:3] not in named, self.rank[i]

    def chapter_naming(self, typed: list[str]) -> tuple[str, str] | None:
        """The codes (first and last category) of the chapter whose title names the typed words (accents off) on
        their own, as its subject: "tai", the ear, in VIII "Bệnh của tai và xương chũm" (H60-H95); not "tiêu" of
        "Bệnh hệ tiêu hóa", "dưỡng" of "… dinh dưỡng và chuyển hóa" (:data:`_SUBJECT_BEFORE`, ``_AFTER``)."""
        n = len(typed)
        for first, last, title in self.chapters:
            for at in range(len(title) - n + 1):
                if list(title[at:at + n]) == typed and (at == 0 or title[at - 1] in _SUBJECT_BEFORE) \
                        and (at + n == len(title) or title[at + n] in _SUBJECT_AFTER):
                    return first, last
        return None

    def holds_whole(self, i: int, typed: str) -> bool:
        """Whether a title of code ``i`` holds the typed words (accents off, joined by spaces) side by side,
        the last a whole word: "suy" in I50 "Suy tim", not in J45 "Hen [suyễn]"."""
        return any(f" {typed} " in f" {title} " for title in self.titles[i])

    def _only_negated(self, i: int, typed: str) -> bool:
        """Whether every title of code ``i`` has the typed words only after a "không" / "without": I11.9 "Bệnh
        tim do tăng huyết áp, không suy tim" (WITHOUT heart failure) for ``suy tim`` goes below the titles
        having it (I13.0 "..., có suy tim"). Words typed with such a word ("khong suy tim") are taken as typed."""
        asked = typed.split()
        if not asked or _NEGATIONS.intersection(asked):
            return False
        for title in self.titles[i]:
            title_words = title.split()
            cut = next((at for at, w in enumerate(title_words) if w in _NEGATIONS), len(title_words))
            if cut == len(title_words) or all(any(w.startswith(t) for w in title_words[:cut]) for t in asked):
                return False
        return True

    def with_prefix(self, word: str) -> frozenset[int]:
        """The codes one of whose title words starts with ``word``."""
        return self._letter(word) if len(word) == 1 else self._union(word)

    @functools.lru_cache(maxsize=40)  # noqa: B019 (one index a process, never freed)
    def _letter(self, word: str) -> frozenset[int]:
        """A one-letter prefix (the start of every word typed) unites up to 9,000 codes: kept, one a
        letter or digit (≤ 0.5 MB each, ~6 MB for all)."""
        return self._union(word)

    def _union(self, word: str) -> frozenset[int]:
        out: set[int] = set()
        at = bisect.bisect_left(self.tokens, word)
        while at < len(self.tokens) and self.tokens[at].startswith(word):
            out.update(self.postings[at])
            at += 1
        return frozenset(out)

    def code_prefix(self, key: str) -> list[int]:
        """The codes starting with ``key`` (no dot: ``e119``, ``E11.9`` and ``E119`` are one), in code order."""
        key = key.upper().replace(".", "")
        at, out = bisect.bisect_left(self.code_keys, key), []
        while at < len(self.code_keys) and self.code_keys[at].startswith(key):
            out.append(self.code_pos[at])
            at += 1
        return sorted(out)


def _preferred_places(lines: list[list[str]]) -> dict[str, str]:
    """Where each code an everyday name lists goes in the list's order: the places of a line's codes (E10,
    E11, ... E14), given out in the line's order, most likely first (``tiểu đường``: E11 type 2 takes E10's
    place, E10 type 1 E11's). The codes no line lists keep their own places; a code takes its place from
    the first line naming it (the lines agree: test_icd10)."""
    place: dict[str, str] = {}
    for codes in lines:
        new = [c for c in dict.fromkeys(codes) if c not in place]
        place.update(zip(new, sorted(new), strict=True))
    return place


def _place(place: dict[str, str], code: str) -> str:
    """``code``'s place in the list's order (:func:`_preferred_places`): a subcategory follows its
    category's (E11.9 takes E10.9's when E11 takes E10's)."""
    if code in place:
        return place[code]
    return place.get(code[:3], code[:3]) + code[3:]


@functools.cache
def _index() -> _Index:
    return _Index()


def codes() -> tuple[Code, ...]:
    """Every code a diagnosis can be coded to (three-, four- and five-character), in the list's order."""
    return _index().coded


def lookup(code: str) -> Code | None:
    """The code of the list (``I21.9``; ``I219`` too), or None: a chapter or block is no diagnosis."""
    found = _index().by_code.get(code)
    if found is None and len(code) in (4, 5) and "." not in code:
        found = _index().by_code.get(f"{code[:3]}.{code[3:]}")
    return found


def label(value: dict[str, Any] | None, lang: str | None = None) -> str:
    """A CodeableConcept (a consult's reason, a conclusion) as the page's language reads it.

    An ICD-10 coding whose code the list knows is shown by the list's title in ``lang`` (the page's
    locale when not given): the reason stored at submission carries the Vietnamese title as its
    text, which an English page would otherwise show. A code not in the list (or no ICD-10 coding)
    shows the stored text, as :func:`formatting.codeable` does."""
    for coding in (value or {}).get("coding") or []:
        if coding.get("system") in (SYSTEM, None) and (hit := lookup(str(coding.get("code") or ""))):
            if lang is None:
                locale = get_locale()
                lang = locale.language if locale else "vi"
            return hit.label(lang)
    return codeable(value)


def line(coding: dict[str, Any], lang: str | None = None) -> str:
    """A diagnosis's line: its code, then its name in ``lang`` (:func:`label`: the list's title, else the
    stored display) — ``I10 — Tăng huyết áp vô căn (nguyên phát)``; the code alone when nothing names it
    (``E11.65``, not ``E11.65 — E11.65``)."""
    code = str(coding.get("code") or "")
    name = label({"coding": [coding]}, lang)
    return code if name in ("", "—", code) else f"{code} — {name}" if code else name


_CODE_TYPED = re.compile(r"[a-z]\d[\d.]*", re.IGNORECASE)


def search(query: str, limit: int = 8) -> list[Code]:
    """Codes for what is typed, best first: codes starting with it (``e11``, ``E11.9``); the codes of
    an everyday name it holds (``tiểu đường`` → E10-E14), narrowed by its other words; codes whose
    Vietnamese or English title has a word starting with each of its words, in any order, without
    accents (``tang huyet ap``, ``cap nhoi mau co tim``): a title that is the words typed first, then
    one starting with them, then one holding them in order, then the rest (:meth:`_Index.title_key`:
    the general disease before pregnancy, newborn and screening codes holding the words alike, those before the
    titles holding the words apart), categories before their
    subcategories, codes that tie in the list's order (:attr:`_Index.rank`: I15.0 … I15.8, I15.9; an everyday
    name's codes in its order), codes of earlier editions last.

    Words that are all an everyday name (``tieu duong``, ``duong tieu``) add only the titles holding
    the name's words side by side in its order: not Q40 "... đường tiêu hóa". A name covering some of
    the words, the others narrowing none of its codes (``ho gà``: R05 "Ho"), goes after the titles
    holding the words typed as a phrase (A37 "Ho gà"), before those holding them apart.

    Words (the last whole, 3 letters or more) that begin a Vietnamese everyday name of more words list its first
    code first ("tang": I10, :func:`_begun`), unless a chapter's title names them on their own: "tai" is the ear
    (VIII "Bệnh của tai và xương chũm", :meth:`_Index.chapter_naming`), whose titles holding it whole come first,
    categories then subcategories, "tai biến"'s I63 after them."""
    q = normalize(query)
    if not q:
        return []
    ix = _index()
    found: list[int] = []
    if _CODE_TYPED.fullmatch(q):
        found += ix.code_prefix(q)
    typed = words(q)
    named_any = False
    answered: list[str] = []  # the everyday names that are all the words typed
    partly: list[int] = []  # the codes of a name covering some of the words, the others narrowing none of them
    begun: list[int] = []  # the codes of a name all typed but its last word only in part ("suy" of "suyễn")
    for term, targets, least in ix.synonyms:
        rest = _covers(term, typed, least)
        if rest is None:
            continue
        named = [i for target in targets for i in ix.code_prefix(target)]
        narrowed = _all_words(ix, rest) & set(named) if rest else set()
        if narrowed or not (rest and named_any):  # "sốt xuất huyết" is no "sốt" with other words
            picked = [i for i in named if i in narrowed] or [i for i in named if ix.coded[i].code in targets]
            if rest and not narrowed:
                partly += picked
            elif not rest and _in_part(term, typed):
                begun += picked
            else:
                found += picked
            if not rest and picked:
                answered.append(" ".join(_plain(term)))
            named_any = True
    started: list[int] = []  # the first codes of the everyday names the words begin
    chapter = None  # the codes of the chapter naming the words on their own
    if typed and not found and not partly:  # "tang": the start of "tăng huyết áp", its most likely code (I10) first
        started = [i for target in _begun(ix, typed) for i in ix.code_prefix(target)[:1]]
        # but "tai" is the ear (VIII "Bệnh của tai và xương chũm") more often than "tai biến" begun (I63)
        chapter = ix.chapter_naming(typed) if started else None
        if chapter is None:
            found += started
    if typed:
        joined = " ".join(_plain(typed))
        hits = _all_words(ix, typed)
        # the families the words name: an everyday name's codes, the categories whose titles hold the words
        named = frozenset({ix.coded[i].code[:3] for i in (*found, *partly)}
                          | {ix.coded[i].code for i in hits if len(ix.coded[i].code) == 3})
        # "suy": the titles holding the words as typed, the last a whole word (I50 "Suy tim"), are what was typed
        # more surely than the name its last word begins ("suyễn", J45): neither hidden nor after it
        whole = {i for i in hits if ix.holds_whole(i, joined)} if begun and len(joined) >= 3 else set()
        if answered:  # "tieu duong": no "đường tiêu hóa" (its words apart, or the other way round)
            hits = {i for i in hits if i in whole or any(ix.title_key(i, name)[2] < 3 for name in answered)}
        if chapter:  # "tai": the ear's titles holding the word whole, categories first, then "tai biến" (I63)
            own = [i for i in hits if chapter[0] <= ix.coded[i].code[:3] <= chapter[1] and ix.holds_whole(i, joined)]
            found += sorted(own, key=lambda i: (len(ix.coded[i].code) > 3, ix.title_key(i, joined, named))) + started
        if len(joined) < 3:  # a letter or two (thousands of titles, nothing to rank them by yet): their place alone
            found += begun + partly + heapq.nsmallest(limit + len(found) + len(partly), hits, key=ix.rank.__getitem__)
        else:
            lead = [i for key, i in heapq.nsmallest(limit + len(found), ((ix.title_key(i, joined, named), i)
                                                                          for i in whole)) if not (key[0] or key[1])]
            # their categories, the name's codes, their subcategories: "suyễn" after the 21 "Suy …" categories
            found += [i for i in lead if len(ix.coded[i].code) == 3] + begun + lead
            keys = heapq.nsmallest(limit + len(found) + len(partly), ((ix.title_key(i, joined, named), i)
                                                                        for i in hits))
            # "ho gà": A37 "Ho gà" before R05 (the name "ho"; "gà" no word of R05's title), R05 before the
            # titles holding the words apart and those of a chapter of its own
            apart = next((at for at, (key, _i) in enumerate(keys) if key[0] or key[1] or key[2] == 3), len(keys))
            found += [i for _key, i in keys[:apart]] + partly + [i for _key, i in keys[apart:]]
    ordered = list(dict.fromkeys(found))
    return [ix.coded[i] for i in ordered[:limit]]


def _covers(term: list[str], typed: list[str], least: int = 2) -> list[str] | None:
    """The typed words left once each word of an everyday name is typed (the last typed word, of
    ``least`` letters or more, may be a word still being typed: ``tieu du``), or None when the name is not
    all there."""
    rest = list(enumerate(typed))
    last = len(typed) - 1
    for word in term:
        hit = next((t for t in rest if t[1] == word or (t[0] == last and len(t[1]) >= least and word.startswith(t[1]))),
                   None)
        if hit is None:
            return None
        rest.remove(hit)
    return [w for _, w in rest]


def _in_part(term: list[str], typed: list[str]) -> bool:
    """Whether the last word typed stands for a longer word of an everyday name it covers (:func:`_covers`):
    "suy" for "suyễn", "du" in "tieu du"."""
    return typed[-1] not in term


def _begun(ix: _Index, typed: list[str]) -> list[str]:
    """The first code of each Vietnamese everyday name of more words than typed whose first words are the words
    typed, the last typed (3 letters or more) its start: "tang" is "tăng huyết áp" begun (I10), "tai bien" "tai
    biến mạch máu não". An English name's, a name all typed (:func:`_covers`) or one word typed in part: none."""
    if len(typed[-1]) < 3:
        return []
    out: list[str] = []
    for term, targets, least in ix.synonyms:
        if least == _EN_LEAST or len(term) <= len(typed) or not targets:
            continue
        if term[:len(typed) - 1] == typed[:-1] and term[len(typed) - 1] == typed[-1]:
            out.append(targets[0])
    return list(dict.fromkeys(out))


def _all_words(ix: _Index, typed: list[str]) -> set[int]:
    if not typed:
        return set()
    hits = ix.with_prefix(typed[0])
    for word in typed[1:]:
        hits &= ix.with_prefix(word)
    return hits


def install(app: Any) -> None:
    """The ``icd10`` and ``icd10_line`` filters; the list is read and indexed here, at start (~0.8 s, ~30 MB), not by
    the first request that needs it."""
    _index()
    app.jinja_env.filters["icd10"] = label
    app.jinja_env.filters["icd10_line"] = line


def parse_field(value: str) -> Code | None:
    """The code at the start of what the reason field holds ('I10 — Tăng huyết áp ...')."""
    return lookup(value.strip().split(" ", 1)[0]) if value else None


_LABEL_AFTER = re.compile(r"\s+[—–-]\s+")  # "I10 — Tăng huyết áp": a picked code, then its label
_CODE_SHAPE = re.compile(r"\b[A-Z]\d{2}(?:\.\d{1,2})?\b")
_BETWEEN = re.compile(r"[\s,;]+")


def parse_codes(text: str) -> tuple[list[Code], list[str]]:
    """The diagnoses a field of several holds, in order and each once, and what it holds that is no
    code of the list (as typed). Codes are separated by commas, semicolons, spaces or new lines
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
