"""The common vital-sign and diabetes LOINC codes by name, Vietnamese and English, for the chart's
trends: a standard panel often carries codes only (a blood-pressure panel's 8480-6 and 8462-4 with no
display), which the chart would otherwise have nothing to call; and the common results that are no number
(blood group, rapid tests, urine dipstick, ...), whose coding's display is the code system's English."""

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
    # FHIR R4's oxygen saturation vital sign: LOINC's "in Arterial blood" (a blood gas's SaO₂, FHIR's code for a
    # pulse oximeter's reading too); the pulse oximeter's own code, SpO₂, is 59408-5
    "2708-6": ("Độ bão hòa oxy", "Oxygen saturation"),
    "59408-5": ("Độ bão hòa oxy (SpO₂)", "Oxygen saturation (SpO₂)"),
    "29463-7": ("Cân nặng", "Body weight"),
    "8302-2": ("Chiều cao", "Body height"),
    "39156-5": ("Chỉ số khối cơ thể (BMI)", "Body mass index (BMI)"),
    "2339-0": ("Glucose máu", "Blood glucose"),
    "2345-7": ("Glucose huyết thanh/huyết tương", "Serum/plasma glucose"),
    "4548-4": ("HbA1c", "HbA1c"),
    # results that are no number (results.py lists them): blood group, rapid tests, urine dipstick, ...
    "882-1": ("Nhóm máu ABO và Rh", "ABO and Rh blood group"),
    "883-9": ("Nhóm máu ABO", "ABO blood group"),
    "10331-7": ("Nhóm máu Rh", "Rh blood group"),
    "94558-4": ("Test nhanh kháng nguyên SARS-CoV-2", "SARS-CoV-2 rapid antigen test"),
    "94500-6": ("SARS-CoV-2 RNA (RT-PCR)", "SARS-CoV-2 RNA (RT-PCR)"),
    "80382-5": ("Test nhanh kháng nguyên cúm A", "Influenza A rapid antigen test"),
    "80383-3": ("Test nhanh kháng nguyên cúm B", "Influenza B rapid antigen test"),
    "75377-2": ("Kháng nguyên NS1 sốt xuất huyết Dengue", "Dengue virus NS1 antigen"),
    "5196-1": ("Kháng nguyên bề mặt viêm gan B (HBsAg)", "Hepatitis B surface antigen (HBsAg)"),
    "20507-0": ("Giang mai (RPR)", "Syphilis (RPR)"),
    "32700-7": ("Tìm ký sinh trùng sốt rét (lam máu)", "Malaria smear"),
    "11545-1": ("Soi tìm vi khuẩn kháng acid (AFB)", "Acid-fast stain (AFB)"),  # any specimen
    "11477-7": ("Soi đờm tìm vi khuẩn kháng acid (AFB)", "Sputum acid-fast stain (AFB)"),
    "2106-3": ("Test thai (hCG nước tiểu)", "Urine pregnancy test (hCG)"),
    "5792-7": ("Glucose niệu (que thử)", "Urine glucose (dipstick)"),
    "5804-0": ("Protein niệu (que thử)", "Urine protein (dipstick)"),
    "5797-6": ("Ceton niệu (que thử)", "Urine ketones (dipstick)"),
    "5794-3": ("Hồng cầu niệu (que thử)", "Urine blood (dipstick)"),
    "5799-2": ("Bạch cầu niệu (que thử)", "Urine leukocyte esterase (dipstick)"),
    "5802-4": ("Nitrit niệu (que thử)", "Urine nitrite (dipstick)"),
    "5770-3": ("Bilirubin niệu (que thử)", "Urine bilirubin (dipstick)"),
    "5803-2": ("pH nước tiểu (que thử)", "Urine pH (dipstick)"),
    "5811-5": ("Tỷ trọng nước tiểu (que thử)", "Urine specific gravity (dipstick)"),
    "8665-2": ("Ngày đầu kỳ kinh cuối", "Last menstrual period start date"),
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
