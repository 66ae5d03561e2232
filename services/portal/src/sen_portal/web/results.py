"""The chart's results that draw no trend: an Observation whose value is no number on a time (a rapid
test's "Âm tính", a blood group, a written finding, yes or no, a date, a value not obtained and why), or
a panel with such a part, each as one line in the page's language: its name (:func:`loinc.label`), its
value, when (Asia/Ho_Chi_Minh) and its interpretation flag (``H``: "Cao"). The numbers on a time are
the chart's trends (``clinic.chart_data``), never listed here a second time."""

from __future__ import annotations

from typing import Any

from flask_babel import get_locale, gettext

from . import loinc
from .formatting import codeable, day, number, when

# the common answers of a qualitative test (LOINC answer lists, SNOMED CT) by name: (Vietnamese, English)
ANSWERS: dict[str, tuple[str, str]] = {
    "LA6577-6": ("Âm tính", "Negative"), "260385009": ("Âm tính", "Negative"),
    "LA6576-8": ("Dương tính", "Positive"), "10828004": ("Dương tính", "Positive"),
    "LA11882-0": ("Không phát hiện", "Not detected"), "260415000": ("Không phát hiện", "Not detected"),
    "LA11883-8": ("Phát hiện", "Detected"), "260373001": ("Phát hiện", "Detected"),
}
INTERPRETATION = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"
FLAGS: dict[str, tuple[str, str]] = {
    "H": ("Cao", "High"), "L": ("Thấp", "Low"), "N": ("Bình thường", "Normal"), "A": ("Bất thường", "Abnormal"),
    "HH": ("Rất cao (nguy hiểm)", "Critically high"), "LL": ("Rất thấp (nguy hiểm)", "Critically low"),
    "AA": ("Bất thường nghiêm trọng", "Critically abnormal"), "POS": ("Dương tính", "Positive"),
    "NEG": ("Âm tính", "Negative"), "DET": ("Phát hiện", "Detected"), "ND": ("Không phát hiện", "Not detected"),
    "IND": ("Không xác định", "Indeterminate"), "E": ("Không rõ ràng", "Equivocal"),
}
ABSENT = "http://terminology.hl7.org/CodeSystem/data-absent-reason"
# why a value is missing (FHIR's data-absent-reason): what the line says instead of the value
ABSENT_REASONS: dict[str, tuple[str, str]] = {
    "unknown": ("Không rõ", "Unknown"), "asked-unknown": ("Đã hỏi, không rõ", "Asked but unknown"),
    "temp-unknown": ("Tạm thời chưa có", "Temporarily unknown"), "not-asked": ("Chưa hỏi", "Not asked"),
    "asked-declined": ("Người bệnh từ chối trả lời", "Asked but declined"), "masked": ("Được ẩn", "Masked"),
    "not-applicable": ("Không áp dụng", "Not applicable"), "unsupported": ("Không hỗ trợ", "Unsupported"),
    "as-text": ("Xem ghi chú", "See the note"), "error": ("Lỗi khi đo", "Error"),
    "not-a-number": ("Không phải số", "Not a number"), "negative-infinity": ("Âm vô cùng", "Negative infinity"),
    "positive-infinity": ("Dương vô cùng", "Positive infinity"),
    "not-performed": ("Không thực hiện", "Not performed"), "not-permitted": ("Không được phép", "Not permitted"),
}
TRANSLATION = "http://hl7.org/fhir/StructureDefinition/translation"
VALUES = ("valueQuantity", "valueCodeableConcept", "valueString", "valueBoolean", "valueInteger", "valueRange",
          "valueRatio", "valueTime", "valueDateTime", "valuePeriod", "valueSampledData")


def _lang(lang: str | None) -> str:
    if lang is None:
        locale = get_locale()
        lang = locale.language if locale else "vi"
    return "en" if lang == "en" else "vi"


def _named(table: dict[str, tuple[str, str]], concept: dict[str, Any] | None, lang: str) -> str | None:
    """The first coding of ``concept`` that ``table`` names, in ``lang``; None when none is."""
    for c in (concept or {}).get("coding") or []:
        if isinstance(c, dict) and (found := table.get(str(c.get("code") or ""))):
            return found[1 if lang == "en" else 0]
    return None


def translated(element: dict[str, Any], field: str, lang: str) -> str | None:
    """``element``'s ``field`` (a string) in ``lang`` as FHIR's translation extension on it gives it
    (``_display``: ``{"extension": [{"url": TRANSLATION, "extension": [lang, content]}]}``); None for none."""
    for ext in (element.get(f"_{field}") or {}).get("extension") or [] if isinstance(element, dict) else []:
        parts = {e.get("url"): e for e in ext.get("extension") or [] if isinstance(e, dict)} \
            if isinstance(ext, dict) and ext.get("url") == TRANSLATION else {}
        if str((parts.get("lang") or {}).get("valueCode") or "").split("-")[0] == lang and \
                (parts.get("content") or {}).get("valueString"):
            return str(parts["content"]["valueString"])
    return None


def with_translation(display: str, lang: str, text: str) -> dict[str, Any]:
    """A Reference's ``display`` (Vietnamese) with its ``text`` in ``lang`` beside it, as :func:`translated`
    reads it back."""
    return {"display": display, "_display": {"extension": [{"url": TRANSLATION, "extension": [
        {"url": "lang", "valueCode": lang}, {"url": "content", "valueString": text}]}]}}


def reference_display(ref: dict[str, Any], lang: str | None = None) -> str:
    """What a Reference is called on a page in its language: the translation kept beside its ``display``
    (a consult's attached record, :func:`clinic.ticked_records`), else its ``display`` as stored (a reference
    made elsewhere); "" for none."""
    lang = _lang(lang)
    if not isinstance(ref, dict):
        return ""
    return translated(ref, "display", lang) or str(ref.get("display") or "")


def concept(value: dict[str, Any] | None, lang: str | None = None) -> str:
    """A coded answer in the page's language: a common answer by its name (``Âm tính`` / ``Negative``);
    a display translated into the language (FHIR's translation extension); else on an English page the
    coding's display (the code system's English), on a Vietnamese one the text as written (the display
    where there is none); "—" for nothing."""
    lang = _lang(lang)
    if (named := _named(ANSWERS, value, lang)) is not None:
        return named
    codings = [c for c in (value or {}).get("coding") or [] if isinstance(c, dict)]
    for c in codings:
        if found := translated(c, "display", lang):
            return found
    display = next((str(c["display"]) for c in codings if c.get("display")), "")
    if lang == "en" and display:
        return display
    return codeable(value)


def _instant(value: Any) -> str:
    """A dateTime as the page writes it in Vietnam: a day alone as its day, an instant with its time."""
    text = str(value or "")
    return day(text) if len(text) <= 10 else when(text)


def _quantity(q: dict[str, Any]) -> str:
    unit = q.get("unit") or q.get("code") or ""
    return " ".join(p for p in (f"{q.get('comparator') or ''}{number(q.get('value'))}", str(unit)) if p)


def value(part: dict[str, Any], lang: str | None = None) -> str:
    """An Observation's (or a component's) value in the page's language; why it is missing (its
    dataAbsentReason); "—" for neither."""
    lang = _lang(lang)
    if isinstance(q := part.get("valueQuantity"), dict):
        return _quantity(q)
    if isinstance(cc := part.get("valueCodeableConcept"), dict):
        return concept(cc, lang)
    if isinstance(part.get("valueString"), str):
        return part["valueString"]
    if isinstance(part.get("valueBoolean"), bool):
        return gettext("Yes") if part["valueBoolean"] else gettext("No")
    if isinstance(part.get("valueInteger"), int):
        return number(part["valueInteger"])
    if part.get("valueDateTime"):
        return _instant(part["valueDateTime"])
    if part.get("valueTime"):
        return str(part["valueTime"])[:5]
    if isinstance(r := part.get("valueRange"), dict):
        return " – ".join(_quantity(r[k]) if isinstance(r.get(k), dict) else "…" for k in ("low", "high"))
    if isinstance(r := part.get("valueRatio"), dict):
        return " / ".join(_quantity(r[k]) if isinstance(r.get(k), dict) else "…" for k in ("numerator", "denominator"))
    if isinstance(p := part.get("valuePeriod"), dict):
        return " – ".join(_instant(p.get(k)) if p.get(k) else "…" for k in ("start", "end"))
    if isinstance(absent := part.get("dataAbsentReason"), dict):
        return _named(ABSENT_REASONS, absent, lang) or codeable(absent)
    return "—"


def flag(obs: dict[str, Any], lang: str | None = None) -> str:
    """The interpretation (``H``: "Cao" / "High"), or "" for none."""
    lang = _lang(lang)
    names = [_named(FLAGS, i, lang) or codeable(i) for i in obs.get("interpretation") or [] if isinstance(i, dict)]
    return ", ".join(n for n in names if n and n != "—")


def effective(obs: dict[str, Any]) -> str | None:
    """When the result was taken (its effective time, else when it was issued)."""
    return obs.get("effectiveDateTime") or obs.get("effectiveInstant") or \
        (obs.get("effectivePeriod") or {}).get("start") or obs.get("issued")


def line(obs: dict[str, Any], lang: str | None = None) -> dict[str, Any]:
    """One result of the list: its id, name, value (a panel's parts each by its name: ``Huyết áp tâm thu:
    150 mmHg; Huyết áp tâm trương: Không thực hiện``), when (``t``, as recorded; ``at``, as the page
    writes it) and flag."""
    lang = _lang(lang)
    parts = [value(obs, lang)] if any(k in obs for k in (*VALUES, "dataAbsentReason")) else []
    parts += [f"{loinc.label(c.get('code'), lang)}: {value(c, lang)}" for c in obs.get("component") or []
              if isinstance(c, dict)]
    at = effective(obs)
    return {"id": obs.get("id"), "label": loinc.label(obs.get("code"), lang), "value": "; ".join(parts) or "—",
            "t": at, "at": _instant(at) if at else "—", "flag": flag(obs, lang)}
