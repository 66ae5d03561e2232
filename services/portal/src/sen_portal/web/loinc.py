"""The common vital-sign and diabetes LOINC codes by name, Vietnamese and English, for the chart's
trends: a standard panel often carries codes only (a blood-pressure panel's 8480-6 and 8462-4 with no
display), which the chart would otherwise have nothing to call."""

from __future__ import annotations

from typing import Any

from flask_babel import get_locale

from .formatting import codeable

SYSTEM = "http://loinc.org"

# code: (Vietnamese, English)
NAMES: dict[str, tuple[str, str]] = {
    "85354-9": ("Huyết áp", "Blood pressure"),
    "8480-6": ("Huyết áp tâm thu", "Systolic blood pressure"),
    "8462-4": ("Huyết áp tâm trương", "Diastolic blood pressure"),
    "8867-4": ("Nhịp tim", "Heart rate"),
    "8310-5": ("Nhiệt độ cơ thể", "Body temperature"),
    "9279-1": ("Nhịp thở", "Respiratory rate"),
    "2708-6": ("Độ bão hòa oxy (SpO₂)", "Oxygen saturation (SpO₂)"),
    "59408-5": ("Độ bão hòa oxy (SpO₂)", "Oxygen saturation (SpO₂)"),
    "29463-7": ("Cân nặng", "Body weight"),
    "8302-2": ("Chiều cao", "Body height"),
    "39156-5": ("Chỉ số khối cơ thể (BMI)", "Body mass index (BMI)"),
    "2339-0": ("Glucose máu", "Blood glucose"),
    "2345-7": ("Glucose huyết thanh/huyết tương", "Serum/plasma glucose"),
    "4548-4": ("HbA1c", "HbA1c"),
}


def name(code: str, lang: str = "vi") -> str | None:
    """The code's name in ``lang`` (``vi`` or ``en``), or None for a code the table does not hold."""
    found = NAMES.get(code)
    return None if found is None else found[1 if lang == "en" else 0]


def label(value: dict[str, Any] | None, lang: str | None = None) -> str:
    """An observation's (or component's) code as the page's language reads it: a LOINC code of the table
    by its name in ``lang`` (the page's locale when not given); else the stored text or a coding's
    display (on an English page the display first: the code system's English, the text often the clinic's
    Vietnamese); else the code itself (``LOINC 8480-6``); "—" for no code at all. Never "?"."""
    if lang is None:
        locale = get_locale()
        lang = locale.language if locale else "vi"
    codings = [c for c in (value or {}).get("coding") or [] if c.get("code")]
    for c in codings:
        if c.get("system") in (SYSTEM, None) and c["code"] in NAMES:
            return name(c["code"], lang) or ""
    display = next((str(c["display"]) for c in (value or {}).get("coding") or [] if c.get("display")), "")
    if lang == "en" and display:
        return display
    if (value or {}).get("text") or display:
        return codeable(value)
    if not codings:
        return "—"
    first = codings[0]
    return f"LOINC {first['code']}" if first.get("system") == SYSTEM else str(first["code"])
