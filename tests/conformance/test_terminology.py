"""The codes Sen writes and names, against confirmed tables: LOINC, SNOMED CT, UCUM and HL7's code systems.

A code written with the wrong number reads as another concept to every other system (a heart rate under a
respiratory rate's LOINC code is charted as breathing); a display that names another concept than its code
misleads the reader of the record. So:

- the vital signs: the FHIR R4 vital-signs profiles of the official package (``hl7.fhir.r4.examples@4.0.1``,
  the StructureDefinitions ``bp``, ``heartrate``, ...) give each sign's required LOINC code and UCUM unit; the
  portal's chart names each by its concept, and the EHR benchmark's generated record uses those codes and units;
- HL7's code systems (``terminology.hl7.org``: v3-ActCode, v2-0203, observation interpretation, ...) are in
  that package: every such code Sen writes is one of them, with the package's display when one is written;
- LOINC and SNOMED CT are not in the package beyond a few value sets: :data:`LOINC` and :data:`SNOMED` hold
  each code Sen uses with its official name, confirmed one by one (LOINC's long common names; SNOMED CT's
  preferred terms, the specialties in FHIR's c80-practice-codes value set where it lists them). A code not in
  them fails here until someone confirms it and adds it, with its name.
"""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
LOINC_SYSTEM, SNOMED_SYSTEM = "http://loinc.org", "http://snomed.info/sct"
UCUM = "http://unitsofmeasure.org"

# LOINC code -> (its long common name, the concept the portal's English name must say)
LOINC: dict[str, tuple[str, str]] = {
    "85354-9": ("Blood pressure panel with all children optional", "Blood pressure"),
    "8480-6": ("Systolic blood pressure", "Systolic blood pressure"),
    "8462-4": ("Diastolic blood pressure", "Diastolic blood pressure"),
    "8867-4": ("Heart rate", "Heart rate"),
    "8310-5": ("Body temperature", "Body temperature"),
    "9279-1": ("Respiratory rate", "Respiratory rate"),
    "2708-6": ("Oxygen saturation in Arterial blood", "Oxygen saturation"),
    "59408-5": ("Oxygen saturation in Arterial blood by Pulse oximetry", "Oxygen saturation (SpO₂)"),
    "29463-7": ("Body weight", "Body weight"),
    "8302-2": ("Body height", "Body height"),
    "39156-5": ("Body mass index (BMI) [Ratio]", "Body mass index (BMI)"),
    "2339-0": ("Glucose [Mass/volume] in Blood", "Blood glucose"),
    "2345-7": ("Glucose [Mass/volume] in Serum or Plasma", "Serum/plasma glucose"),
    "4548-4": ("Hemoglobin A1c/Hemoglobin.total in Blood", "HbA1c"),
    "882-1": ("ABO and Rh group [Type] in Blood", "ABO and Rh blood group"),
    "883-9": ("ABO group [Type] in Blood", "ABO blood group"),
    "10331-7": ("Rh [Type] in Blood", "Rh blood group"),
    "94558-4": ("SARS-CoV-2 (COVID-19) Ag [Presence] in Respiratory specimen by Rapid immunoassay",
                "SARS-CoV-2 rapid antigen test"),
    "94500-6": ("SARS-CoV-2 (COVID-19) RNA [Presence] in Respiratory specimen by NAA with probe detection",
                "SARS-CoV-2 RNA (RT-PCR)"),
    "80382-5": ("Influenza virus A Ag [Presence] in Upper respiratory specimen by Rapid immunoassay",
                "Influenza A rapid antigen test"),
    "80383-3": ("Influenza virus B Ag [Presence] in Upper respiratory specimen by Rapid immunoassay",
                "Influenza B rapid antigen test"),
    "75377-2": ("Dengue virus NS1 Ag [Presence] in Serum, Plasma or Blood by Rapid immunoassay",
                "Dengue virus NS1 antigen"),
    "5196-1": ("Hepatitis B virus surface Ag [Presence] in Serum or Plasma by Immunoassay",
               "Hepatitis B surface antigen (HBsAg)"),
    "20507-0": ("Reagin Ab [Presence] in Serum by RPR", "Syphilis (RPR)"),
    "32700-7": ("Microscopic observation [Identifier] in Blood by Malaria smear", "Malaria smear"),
    "11545-1": ("Microscopic observation [Identifier] in Specimen by Acid fast stain", "Acid-fast stain (AFB)"),
    "11477-7": ("Microscopic observation [Identifier] in Sputum by Acid fast stain", "Sputum acid-fast stain (AFB)"),
    "2106-3": ("Choriogonadotropin (pregnancy test) [Presence] in Urine", "Urine pregnancy test (hCG)"),
    "5792-7": ("Glucose [Mass/volume] in Urine by Test strip", "Urine glucose (dipstick)"),
    "5804-0": ("Protein [Mass/volume] in Urine by Test strip", "Urine protein (dipstick)"),
    "5797-6": ("Ketones [Mass/volume] in Urine by Test strip", "Urine ketones (dipstick)"),
    "5794-3": ("Hemoglobin [Presence] in Urine by Test strip", "Urine blood (dipstick)"),
    "5799-2": ("Leukocyte esterase [Presence] in Urine by Test strip", "Urine leukocyte esterase (dipstick)"),
    "5802-4": ("Nitrite [Presence] in Urine by Test strip", "Urine nitrite (dipstick)"),
    "5770-3": ("Bilirubin.total [Presence] in Urine by Test strip", "Urine bilirubin (dipstick)"),
    "5803-2": ("pH of Urine by Test strip", "Urine pH (dipstick)"),
    "5811-5": ("Specific gravity of Urine by Test strip", "Urine specific gravity (dipstick)"),
    "8665-2": ("Last menstrual period start date", "Last menstrual period start date"),
    "11488-4": ("Consult note", "Consult note"),  # the EHR's consult record (Composition.type)
    # its document class (Composition.category): a LOINC Document Ontology part, as FHIR R4's Composition/example
    "LP173421-1": ("Report", "Report"),
    # answers (LOINC answer lists)
    "LA6577-6": ("Negative", "Negative"), "LA6576-8": ("Positive", "Positive"),
    "LA11882-0": ("Not detected", "Not detected"), "LA11883-8": ("Detected", "Detected"),
}

# SNOMED CT code -> its preferred term (the specialties: FHIR's c80-practice-codes display where it lists them)
SNOMED: dict[str, str] = {
    # specialties (PractitionerRole.specialty, Schedule.specialty, ServiceRequest.performerType, price useContext)
    "394579002": "Cardiology", "394583002": "Endocrinology", "394914008": "Radiology",
    "394537008": "Pediatric specialty", "419772000": "Family practice", "394814009": "General practice",
    "394589003": "Nephrology",
    # the consult (ServiceRequest.category and code)
    "11429006": "Consultation",
    # qualitative answers
    "260385009": "Negative", "10828004": "Positive", "260415000": "Not detected", "260373001": "Detected",
    # body sites of imaging series (DICOM's body parts)
    "51185008": "Thoracic structure", "39607008": "Lung structure", "80891009": "Heart structure",
    "818983003": "Abdomen", "113345001": "Abdominal structure", "818982008": "Abdomen and pelvis",
    "816092008": "Pelvis", "12921003": "Pelvic structure", "69536005": "Head structure",
    "89546000": "Bone structure of cranium", "12738006": "Brain structure", "45048000": "Neck structure",
    "421060004": "Structure of vertebral column", "122494005": "Cervical spine structure",
    "122495006": "Thoracic spine structure", "122496007": "Lumbar spine structure", "66019005": "Limb structure",
    "53120007": "Upper limb structure", "61685007": "Lower limb structure", "16982005": "Shoulder region structure",
    "85562004": "Hand structure", "74670003": "Wrist region structure", "29836001": "Hip region structure",
    "72696002": "Knee region structure", "70258002": "Ankle joint structure", "56459004": "Foot structure",
    "76752008": "Breast structure", "10200004": "Liver structure", "64033007": "Kidney structure",
}

# the concept each body site's English name says (the portal names a structure by its part)
BODY_SITE_ENGLISH = {"51185008": "Chest", "39607008": "Lung", "80891009": "Heart", "818983003": "Abdomen",
                     "113345001": "Abdomen", "818982008": "Abdomen and pelvis", "816092008": "Pelvis",
                     "12921003": "Pelvis", "69536005": "Head", "89546000": "Skull", "12738006": "Brain",
                     "45048000": "Neck", "421060004": "Spine", "122494005": "Cervical spine",
                     "122495006": "Thoracic spine", "122496007": "Lumbar spine", "66019005": "Limb",
                     "53120007": "Upper limb", "61685007": "Lower limb", "16982005": "Shoulder", "85562004": "Hand",
                     "74670003": "Wrist", "29836001": "Hip", "72696002": "Knee", "70258002": "Ankle",
                     "56459004": "Foot", "76752008": "Breast", "10200004": "Liver", "64033007": "Kidney"}

# the specialties by the Vietnamese names Sen's data gives them (the demo province, the price list's titles)
SPECIALTY_VI = {"394579002": {"Tim mạch"}, "394583002": {"Nội tiết"}, "394914008": {"Chẩn đoán hình ảnh"},
                "394537008": {"Nhi khoa", "Nhi"}, "419772000": {"Y học gia đình"},
                "394814009": {"Y sĩ đa khoa", "Đa khoa"}, "394589003": {"Thận"}}

# FHIR R4 vital-signs profile (StructureDefinition id) -> the concept the portal's English name says
VITAL_SIGN_PROFILES = {"bp": "Blood pressure", "heartrate": "Heart rate", "resprate": "Respiratory rate",
                       "bodytemp": "Body temperature", "bodyweight": "Body weight", "bodyheight": "Body height",
                       "bmi": "Body mass index (BMI)", "oxygensat": "Oxygen saturation"}


def _package_resources(package: Path) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for path in package.glob("*.json"):
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            continue
        if not isinstance(doc, dict):
            continue
        entries = [e.get("resource") or {} for e in doc.get("entry") or []] if doc.get("resourceType") == "Bundle" \
            else [doc]
        out += [r for r in entries if isinstance(r, dict)]
    return out


@pytest.fixture(scope="module")
def package(r4_examples_dir: Path) -> list[dict[str, Any]]:
    return _package_resources(r4_examples_dir)


@pytest.fixture(scope="module")
def hl7_codes(package: list[dict[str, Any]]) -> dict[str, dict[str, str]]:
    """Every code of the package's CodeSystems, by system URL: code -> display."""
    systems: dict[str, dict[str, str]] = {}

    def add(url: str, concepts: list[dict[str, Any]]) -> None:
        for c in concepts:
            systems.setdefault(url, {})[c["code"]] = c.get("display") or ""
            add(url, c.get("concept") or [])

    for r in package:
        if r.get("resourceType") == "CodeSystem" and r.get("url"):
            add(r["url"], r.get("concept") or [])
    return systems


def _vital_sign_profiles(package: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Each vital-signs profile's fixed code(s) and UCUM unit(s): id -> {"codes": [...], "units": [...]}."""
    value_sets = {r["url"]: r for r in package if r.get("resourceType") == "ValueSet" and r.get("url")}
    found: dict[str, dict[str, Any]] = {}
    for r in package:
        if r.get("resourceType") != "StructureDefinition" or r.get("id") not in VITAL_SIGN_PROFILES:
            continue
        codes, units = [], []
        for el in (r.get("differential") or {}).get("element") or []:
            path = el["id"]
            if path.startswith("Observation.code.coding:") and path.endswith(".code") and "fixedCode" in el:
                codes.append(el["fixedCode"])
            if path == "Observation.valueQuantity.code":
                if "fixedCode" in el:
                    units.append(el["fixedCode"])
                binding = (el.get("binding") or {}).get("valueSet")
                if binding and binding.split("|")[0] in value_sets:
                    units += [c["code"] for inc in value_sets[binding.split("|")[0]]["compose"]["include"]
                              for c in inc.get("concept") or []]
        found[r["id"]] = {"codes": codes, "units": units}
    return found


# --------------------------------------------------------------------------- the portal's tables

def test_the_portals_vital_signs_are_the_codes_of_fhirs_vital_sign_profiles(package) -> None:
    from sen_portal.web import loinc

    profiles = _vital_sign_profiles(package)
    assert set(profiles) == set(VITAL_SIGN_PROFILES), "the package's vital-signs profiles"
    for sid, concept in VITAL_SIGN_PROFILES.items():
        assert len(profiles[sid]["codes"]) == 1, (sid, profiles[sid])
        code = profiles[sid]["codes"][0]
        assert loinc.name(code, "en") == concept, (sid, code, loinc.name(code, "en"))
        assert code in LOINC and LOINC[code][1] == concept, code


def test_every_loinc_code_the_portal_names_is_confirmed_with_its_concept() -> None:
    from sen_portal.web import loinc

    unconfirmed = sorted(set(loinc.NAMES) - set(LOINC))
    assert not unconfirmed, f"LOINC codes not in the confirmed table (confirm each, then add it): {unconfirmed}"
    for code, (vi, en) in loinc.NAMES.items():
        assert en == LOINC[code][1], (code, en, LOINC[code])
        assert vi, code


def test_the_answers_and_body_sites_the_portal_names_are_confirmed() -> None:
    from sen_portal.web import imaging, results

    for code, (_vi, en) in results.ANSWERS.items():
        official = LOINC[code][0] if code.startswith("LA") else SNOMED[code]
        assert en == official, (code, en, official)
    for code, (_vi, en) in imaging.BODY_SITES.items():
        assert code in SNOMED, code
        assert en == BODY_SITE_ENGLISH[code], (code, en, SNOMED[code])


# --------------------------------------------------------------------------- every coding written in the code

SOURCES = [*sorted((ROOT / "services").glob("*/src/**/*.py")), *sorted((ROOT / "shared" / "src").glob("**/*.py")),
           *sorted((ROOT / "deploy" / "local").glob("*.py")), ROOT / "tests" / "perf" / "test_ehr_bench.py"]
CODING = re.compile(r'"system":\s*(?P<system>"[^"]+"|[A-Z_]+),\s*"code":\s*"(?P<code>[^"]+)"'
                    r'(?:,\s*"display":\s*"(?P<display>[^"]*)")?')
CONSTANT = re.compile(r'^([A-Z_]+)\s*=\s*"(http[^"]+)"', re.M)


def written_codings() -> list[tuple[str, str, str, str | None]]:
    """(file, system, code, display) of every coding with a literal code in Sen's source."""
    out = []
    for path in SOURCES:
        text = path.read_text(encoding="utf-8")
        constants = dict(CONSTANT.findall(text))
        for m in CODING.finditer(text):
            system = m["system"].strip('"') if m["system"].startswith('"') else constants.get(m["system"], "")
            out.append((str(path.relative_to(ROOT)), system, m["code"], m["display"]))
    return out


def test_every_loinc_and_snomed_code_written_is_confirmed_with_its_display() -> None:
    seen = set()
    for where, system, code, display in written_codings():
        if system == LOINC_SYSTEM:
            assert code in LOINC, (where, code)
            assert display is None or display.casefold() == LOINC[code][0].casefold(), (where, code, display)
        elif system == SNOMED_SYSTEM:
            assert code in SNOMED, (where, code)
            assert display is None or display == SNOMED[code], (where, code, display)
        seen.add((system, code))
    # the scan finds what it is for (a pattern that stopped matching would pass everything)
    assert {(SNOMED_SYSTEM, "11429006"), (LOINC_SYSTEM, "11488-4")} <= seen


def test_every_hl7_code_written_is_in_its_code_system(hl7_codes) -> None:
    checked = 0
    for where, system, code, display in written_codings():
        if not system.startswith(("http://terminology.hl7.org/CodeSystem/", "http://hl7.org/fhir/")) \
                or system not in hl7_codes:
            continue
        assert code in hl7_codes[system], (where, system, code)
        assert display is None or display.casefold() == hl7_codes[system][code].casefold(), \
            (where, system, code, display, hl7_codes[system][code])
        checked += 1
    assert checked >= 10, checked
    from sen_portal.web import results
    from sen_shared.fhir import audit

    for code in audit.SUBTYPES.values():  # AuditEvent.subtype
        assert code in hl7_codes[audit.SUBTYPE_SYSTEM], code
    # the interpretation flags and the reasons a value is absent the portal names (in words of its own)
    for table, system in ((results.FLAGS, results.INTERPRETATION), (results.ABSENT_REASONS, results.ABSENT)):
        assert set(table) <= set(hl7_codes[system]), (system, set(table) - set(hl7_codes[system]))


def test_the_ehr_benchmarks_generated_vital_signs_use_the_profiles_codes_and_units(package) -> None:
    """The benchmark's generated record (tests/perf) is a province's worth of demo data: each vital sign's code is
    a profile's, its display the code's, its unit one the profile allows."""
    tree = ast.parse((ROOT / "tests" / "perf" / "test_ehr_bench.py").read_text(encoding="utf-8"))
    vitals = next(ast.literal_eval(n.value) for n in tree.body
                  if isinstance(n, ast.Assign) and getattr(n.targets[0], "id", "") == "VITALS")
    profiles = _vital_sign_profiles(package)
    units = {p["codes"][0]: p["units"] for p in profiles.values()}
    units.update({"8480-6": ["mm[Hg]"], "8462-4": ["mm[Hg]"]})  # the bp profile's components
    units["59408-5"] = units["2708-6"]  # pulse oximetry: the oxygen saturation profile's second code
    for code, display, unit, *_ in vitals:
        assert code in LOINC and LOINC[code][1].startswith(display), (code, display)
        assert unit in units[code], (code, unit, units[code])


# --------------------------------------------------------------------------- specialties

def test_the_portals_specialty_displays_are_snomeds() -> None:
    """The consult form writes these as its performerType coding's display (the Vietnamese name is the text)."""
    from sen_portal.web.prices import SPECIALTIES, SPECIALTY_DISPLAYS

    assert set(SPECIALTY_DISPLAYS) == set(SPECIALTIES)
    for code, display in SPECIALTY_DISPLAYS.items():
        assert display == SNOMED[code], (code, display, SNOMED.get(code))


def test_every_specialty_code_is_a_confirmed_specialty_under_its_vietnamese_name(package) -> None:
    from sen_portal.web import prices

    practice = {c["code"]: c["display"] for r in package if r.get("url") == "http://hl7.org/fhir/ValueSet/c80-practice-codes"
                for inc in r["compose"]["include"] for c in inc.get("concept") or []}
    demo = json.loads((ROOT / "deploy" / "local" / "demo-province.json").read_text(encoding="utf-8"))
    for p in demo["practitioners"]:
        code = p["specialtyCode"]
        assert code in SPECIALTY_VI and p["specialty"] in SPECIALTY_VI[code], (p["id"], code, p["specialty"])
        # the seed writes it as the coding's display, the Vietnamese name as the concept's text
        assert p["specialtyDisplay"] == SNOMED[code], (p["id"], code, p.get("specialtyDisplay"))
    price_list = json.loads((ROOT / "services" / "billing" / "src" / "sen_billing" / "data" / "price_list.json")
                            .read_text(encoding="utf-8"))
    priced = {c["code"]: entry for entry in price_list["entry"] for ctx in entry.get("useContext") or []
              for c in (ctx.get("valueCodeableConcept") or {}).get("coding") or [] if c.get("system") == SNOMED_SYSTEM}
    assert priced, "the price list's specialty prices"
    for code, entry in priced.items():
        title = (entry.get("code") or {}).get("text") or entry.get("title") or ""
        assert code in SPECIALTY_VI and any(title.endswith(vi) for vi in SPECIALTY_VI[code]), (code, title)
    assert set(prices.SPECIALTIES) <= set(SPECIALTY_VI)
    for code in {*(p["specialtyCode"] for p in demo["practitioners"]), *priced, *prices.SPECIALTIES}:
        if code in practice:  # FHIR's practice-setting value set (it lists no "Pediatric specialty")
            assert practice[code] == SNOMED[code], (code, practice[code])


# --------------------------------------------------------------------------- the consult record

def test_the_consult_records_category_is_a_document_class_not_its_type(package) -> None:
    """Composition.category is the document's class (R4's binding: document-classcodes, an example), not its kind
    again: the EHR's consult note is classed as FHIR R4's own consult note example (Composition/example, type LOINC
    11488-4) classes it."""
    from sen_ehr.domain.consult_record import build_composition

    example = next(r for r in package if r.get("resourceType") == "Composition" and r.get("id") == "example")
    period = {"start": "2026-12-06T08:00:00+07:00", "end": "2026-12-06T08:30:00+07:00"}
    comp = build_composition({
        "serviceRequest": "ServiceRequest/sr-1", "patient": "Patient/bn-0001", "performer": "Practitioner/bs-an",
        "completedAt": period["end"], "period": period,
        "minutes": {"participants": [{"reference": "Practitioner/bs-an", "display": "BS. Nguyễn Văn An",
                                      "role": "chủ trì"}],
                    "summary": "s", "findings": "f", "recommendations": "r",
                    "conclusion": {"system": "http://hl7.org/fhir/sid/icd-10", "code": "I10"}}}, "c", "e")
    assert comp["type"]["coding"] == example["type"]["coding"]
    assert [c["code"] for cat in comp["category"] for c in cat["coding"]] == \
        [c["code"] for cat in example["category"] for c in cat["coding"]] == ["LP173421-1"]
    assert {c["code"] for c in comp["type"]["coding"]}.isdisjoint(
        c["code"] for cat in comp["category"] for c in cat["coding"])
    for coding in [*comp["type"]["coding"], *(c for cat in comp["category"] for c in cat["coding"])]:
        assert coding["system"] == LOINC_SYSTEM and coding["display"].casefold() == LOINC[coding["code"]][0].casefold()
