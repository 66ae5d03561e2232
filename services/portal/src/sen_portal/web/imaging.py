"""The chart's imaging studies (FHIR ImagingStudy: an X-ray, a CT, an ultrasound …), each as one line in the
page's language: when it was made (Asia/Ho_Chi_Minh), its modality by name (DICOM's codes: ``DX`` "X-quang
kỹ thuật số"), its description, how many series and images, the body sites by name (SNOMED's codes:
``51185008`` "Ngực"), and a link to where its images are (its ``endpoint``'s address, http or https only),
newest first (``clinic.chart_data``)."""

from __future__ import annotations

from typing import Any

from .formatting import when
from .results import _lang

# DICOM's modality codes (http://dicom.nema.org/resources/ontology/DCM) a clinic meets: (Vietnamese, English)
MODALITIES: dict[str, tuple[str, str]] = {
    "CR": ("X-quang (CR)", "Computed radiography"), "DX": ("X-quang kỹ thuật số", "Digital radiography"),
    "CT": ("Chụp cắt lớp vi tính (CT)", "Computed tomography"),
    "MR": ("Chụp cộng hưởng từ (MRI)", "Magnetic resonance"),
    "US": ("Siêu âm", "Ultrasound"), "XA": ("Chụp mạch X-quang", "X-ray angiography"),
    "MG": ("Chụp X-quang tuyến vú", "Mammography"), "NM": ("Y học hạt nhân", "Nuclear medicine"),
    "PT": ("Chụp PET", "Positron emission tomography"), "RF": ("Chiếu X-quang huỳnh quang", "Radio fluoroscopy"),
    "ECG": ("Điện tim", "Electrocardiography"), "ES": ("Nội soi", "Endoscopy"),
    "IO": ("X-quang răng trong miệng", "Intra-oral radiography"), "PX": ("X-quang răng toàn cảnh", "Panoramic X-ray"),
    "OP": ("Chụp ảnh đáy mắt", "Ophthalmic photography"), "XC": ("Ảnh chụp ngoài", "External-camera photography"),
    "SM": ("Tiêu bản hiển vi", "Slide microscopy"), "OT": ("Khác", "Other"),
}


SNOMED = "http://snomed.info/sct"
# a series' body site (SNOMED CT, DICOM's body parts) a clinic meets: (Vietnamese, English)
BODY_SITES: dict[str, tuple[str, str]] = {
    "51185008": ("Ngực", "Chest"), "39607008": ("Phổi", "Lung"), "80891009": ("Tim", "Heart"),
    "818983003": ("Bụng", "Abdomen"), "113345001": ("Bụng", "Abdomen"),
    "818982008": ("Bụng và chậu", "Abdomen and pelvis"),
    "816092008": ("Khung chậu", "Pelvis"), "12921003": ("Khung chậu", "Pelvis"),
    "69536005": ("Đầu", "Head"), "89546000": ("Hộp sọ", "Skull"), "12738006": ("Não", "Brain"),
    "45048000": ("Cổ", "Neck"),
    "421060004": ("Cột sống", "Spine"), "122494005": ("Cột sống cổ", "Cervical spine"),
    "122495006": ("Cột sống ngực", "Thoracic spine"), "122496007": ("Cột sống thắt lưng", "Lumbar spine"),
    "66019005": ("Chi", "Limb"), "53120007": ("Chi trên", "Upper limb"), "61685007": ("Chi dưới", "Lower limb"),
    "16982005": ("Vai", "Shoulder"), "85562004": ("Bàn tay", "Hand"), "74670003": ("Cổ tay", "Wrist"),
    "29836001": ("Háng", "Hip"), "72696002": ("Gối", "Knee"), "70258002": ("Cổ chân", "Ankle"),
    "56459004": ("Bàn chân", "Foot"),
    "76752008": ("Vú", "Breast"), "10200004": ("Gan", "Liver"), "64033007": ("Thận", "Kidney"),
}


def body_site(coding: dict[str, Any], lang: str) -> str:
    """A body site's name in ``lang``: a SNOMED code of the table by its name, else the coding's display, else
    its code."""
    named = BODY_SITES.get(str(coding.get("code") or "")) if coding.get("system") in (SNOMED, None) else None
    if named:
        return named[1 if lang == "en" else 0]
    return str(coding.get("display") or coding.get("code") or "")


def modality(coding: dict[str, Any], lang: str) -> str:
    """A modality's name in ``lang``: DICOM's code by the table, else the coding's display, else its code."""
    named = MODALITIES.get(str(coding.get("code") or "").upper())
    if named:
        return named[1 if lang == "en" else 0]
    return str(coding.get("display") or coding.get("code") or "")


def _address(ref: Any, by_id: dict[str, dict[str, Any]], contained: dict[str, dict[str, Any]]) -> str | None:
    """The http(s) address of an ``endpoint`` reference: a contained Endpoint (``#id``) or one the Bundle holds
    (``Endpoint/id``); None for any other (never a ``javascript:`` link)."""
    text = str((ref or {}).get("reference") or "") if isinstance(ref, dict) else ""
    endpoint = contained.get(text[1:]) if text.startswith("#") else by_id.get(text.removeprefix("Endpoint/")) \
        if text.startswith("Endpoint/") else None
    address = str((endpoint or {}).get("address") or "")
    return address if address.lower().startswith(("https://", "http://")) else None


def line(study: dict[str, Any], endpoints: dict[str, dict[str, Any]], lang: str | None = None) -> dict[str, Any]:
    """One ImagingStudy as the chart lists it. ``endpoints``: the Bundle's Endpoints by id."""
    lang = _lang(lang)
    series = [s for s in study.get("series") or [] if isinstance(s, dict)]
    codings = [c for c in study.get("modality") or [] if isinstance(c, dict)]
    codings += [s["modality"] for s in series if isinstance(s.get("modality"), dict)]
    names = list(dict.fromkeys(n for n in (modality(c, lang) for c in codings) if n))
    sites = list(dict.fromkeys(body_site(s["bodySite"], lang) for s in series if isinstance(s.get("bodySite"), dict)))
    instances = study.get("numberOfInstances")
    if not isinstance(instances, int):
        counted = [s.get("numberOfInstances") if isinstance(s.get("numberOfInstances"), int) else
                   len(s.get("instance") or []) for s in series]
        instances = sum(counted) if series else None
    n_series = study.get("numberOfSeries") if isinstance(study.get("numberOfSeries"), int) else (
        len(series) if series else None)
    contained = {str(r.get("id")): r for r in study.get("contained") or [] if isinstance(r, dict)
                 and r.get("resourceType") == "Endpoint"}
    link = next((a for ref in [*(study.get("endpoint") or []), *(e for s in series for e in s.get("endpoint") or [])]
                 if (a := _address(ref, endpoints, contained))), None)
    started = study.get("started")
    return {"id": study.get("id"), "t": started, "at": when(started) if started else "",
            "modality": ", ".join(names), "description": str(study.get("description") or ""),
            "series": n_series, "instances": instances, "sites": [s for s in sites if s], "link": link}
