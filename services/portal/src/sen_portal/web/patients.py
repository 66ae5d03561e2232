"""Patients as the pages name them: full name (with diacritics), sex and age, read from the EHR.

Every read goes with the signed-in user's token, so the EHR decides whom the user may see: a
search (``Patient?_id=a,b,c``) leaves out the patients the user does not reach (a hub doctor
reaches a clinic's patient only through a referral grant), it never fails the whole search for
them. A page asks ONE search for all the patients it shows (the shared FHIR engine asks an
indexed equality per id, not a ``$in``), kept ``SEN_PORTAL_CACHE_SECONDS`` for the user like the
page's other answers. The EHR not answering gives no names (the rows show a dash), never an error
page: nothing else on those pages depends on the name.
"""

from __future__ import annotations

import calendar
import re
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from flask_babel import gettext, lazy_gettext, ngettext

from .backend import BackendError, entries, fhir_get, fhir_post
from .formatting import TZ, human_name

FHIR_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")


def patient_id(ref: Mapping[str, Any] | str | None) -> str | None:
    """The id of a ``Patient/<id>`` Reference (or its text), else None."""
    text = str((ref.get("reference") or "") if isinstance(ref, Mapping) else (ref or ""))
    pid = text.removeprefix("Patient/")
    return pid if text.startswith("Patient/") and FHIR_ID.fullmatch(pid) else None


def lookup(pids: Iterable[str], elements: str = "name") -> dict[str, dict[str, Any]] | None:
    """The Patients among ``pids`` the user may read (by id; only ``elements``), in one EHR search;
    None when the EHR did not answer (or refused the search itself), so a page can tell "not
    readable" from "not known now"."""
    wanted = sorted({p for p in pids if p and FHIR_ID.fullmatch(p)})
    if not wanted:
        return {}
    try:
        bundle = fhir_get("ehr", "/fhir/Patient", {"_id": ",".join(wanted), "_elements": elements,
                                                   "_count": str(len(wanted))}, cached=True)
    except BackendError:
        return None
    return {str(p.get("id")): p for p in entries(bundle, "Patient") if str(p.get("id")) in wanted}


def patient_names(pids: Iterable[str]) -> dict[str, str]:
    """Each readable patient's full name by id (one EHR search); the EHR failing gives none."""
    return {pid: human_name(p) for pid, p in (lookup(pids) or {}).items()}


def age(birth: Any, today: date | None = None) -> tuple[int, str] | None:
    """Completed (years, "years") of a FHIR ``birthDate`` (``yyyy``, ``yyyy-mm`` or ``yyyy-mm-dd``) on
    ``today`` in Asia/Ho_Chi_Minh; a baby under one: (months, "months"). A partial date counts from
    the last day it may be (never older than the patient is). None: no date, or one in the future."""
    text = str(birth or "")
    today = today or datetime.now(TZ).date()
    try:
        if re.fullmatch(r"\d{4}", text):
            born = date(int(text), 12, 31)
        elif re.fullmatch(r"\d{4}-\d{2}", text):
            y, m = int(text[:4]), int(text[5:7])
            born = date(y, m, calendar.monthrange(y, m)[1])
        else:
            born = date.fromisoformat(text[:10])
    except ValueError:
        return None
    if born > today:
        return None
    months = (today.year - born.year) * 12 + today.month - born.month - (today.day < born.day)
    return (months // 12, "years") if months >= 12 else (months, "months")


def age_text(birth: Any, today: date | None = None) -> str:
    """"56 tuổi" / "56 years", a baby "7 tháng" / "7 months"; "" without a usable date."""
    found = age(birth, today)
    if found is None:
        return ""
    n, unit = found
    if unit == "years":
        return ngettext("%(num)d year", "%(num)d years", n)
    return ngettext("%(num)d month", "%(num)d months", n)


_SEXES = {"female": lazy_gettext("Female"), "male": lazy_gettext("Male"), "other": lazy_gettext("Other"),
          "unknown": lazy_gettext("Unknown")}


def sex_text(gender: Any) -> str:
    """A FHIR ``gender`` in the user's language: the one label, translated once a process and language
    (``web.said``), where all four were looked up through Flask-Babel on every call (a worklist row's patient)."""
    label = _SEXES.get(str(gender or ""))
    if label is None:
        return ""
    from . import said  # the web package imports this module

    return said(label)


@dataclass(frozen=True)
class Shown:
    """What a page shows of one patient: ``name`` only when the EHR let the user read them
    (``readable``); ``known``: the EHR answered (False: it did not, so nothing is known now)."""

    pid: str | None
    name: str = "—"
    sex: str = ""
    age: str = ""
    readable: bool = False
    known: bool = True


def shown(pid: str | None, found: dict[str, dict[str, Any]] | None) -> Shown:
    """``pid`` as the page shows it, from :func:`lookup`'s answer."""
    if not pid:
        return Shown(None)
    if found is None:
        return Shown(pid, known=False)
    p = found.get(pid)
    if p is None:
        return Shown(pid)
    return Shown(pid, human_name(p), sex_text(p.get("gender")), age_text(p.get("birthDate")), True)


def one(pid: str | None) -> Shown:
    """One patient's name, sex and age (the consult pages), read like the lists' (a search: a
    patient the user may not read is simply not found, never an error)."""
    return shown(pid, lookup([pid] if pid else [], "name,gender,birthDate"))


# ------------------------------------------------------------------ registering: the same patient again

SAME_MAX = 20


def same_person(family: str, given: str, birth: date, gender: str) -> list[dict[str, Any]]:
    """The patients the user reaches (their facility's, as the EHR scopes a clinic's search) with this
    name (accent- and case-insensitive, every word, in order), date of birth and sex: who a new
    registration may repeat. One EHR search (family name, birthdate, gender: indexed), the whole name
    compared here; a BackendError when the EHR refuses or does not answer."""
    from sen_shared.fhir.search.text import normalize

    wanted = normalize(f"{family} {given}")
    bundle = fhir_get("ehr", "/fhir/Patient", {
        "family": family.strip(), "birthdate": birth.isoformat(), "gender": gender, "_count": str(SAME_MAX),
        "_elements": "name,gender,birthDate,identifier,managingOrganization,address,telecom"})
    return [p for p in entries(bundle, "Patient")
            if normalize(human_name(p)) == wanted and FHIR_ID.fullmatch(str(p.get("id") or ""))]


def masked(number: Any) -> str:
    """A CCCD or BHYT number with all but its last 4 characters hidden ("••••••••6170"): enough to
    tell two records apart, not to read the card off the screen."""
    text = str(number or "")
    return "•" * max(len(text) - 4, 0) + text[-4:]


def address_text(patient: Mapping[str, Any]) -> str:
    """The patient's first address as one line (its ``text``, else street, district, city, province)."""
    addr = next(iter(patient.get("address") or ()), None) or {}
    if addr.get("text"):
        return str(addr["text"])
    parts = [*(addr.get("line") or ()), addr.get("district"), addr.get("city"), addr.get("state")]
    return ", ".join(str(p) for p in parts if p)


def phone_text(patient: Mapping[str, Any]) -> str:
    return next((str(t.get("value") or "") for t in patient.get("telecom") or () if t.get("system") == "phone"), "")


def recorded(patient: Mapping[str, Any]) -> tuple[str, str] | None:
    """When the record was made or last changed, as the EHR keeps it at no cost (``meta``): ("registered",
    instant) for a first version (its ``lastUpdated`` is the registration), else ("updated", instant)."""
    meta = patient.get("meta") or {}
    if not meta.get("lastUpdated"):
        return None
    return ("registered" if str(meta.get("versionId") or "") == "1" else "updated"), str(meta["lastUpdated"])


# ------------------------------------------------------------------ taking on a patient registered elsewhere

TAKE_ON_REASON = "Người bệnh đến khám tại cơ sở"  # the EHR's record of why: in Vietnamese, as the records are


def take_on(pid: str | None, system: str, number: str, reason: str = TAKE_ON_REASON) -> dict[str, Any]:
    """The EHR's ``Patient/<pid>/$take-on`` (``pid`` None: ``Patient/$take-on``, the patient holding the
    number): the user's facility granted the patient on the full number of their card (CCCD or BHYT
    ``system``); the grant's Parameters (``patient`` names them), or a BackendError (403: the number is
    not that patient's, or no one's). Idempotent at the EHR: a second click answers the same grant."""
    path = f"/fhir/Patient/{pid}/$take-on" if pid else "/fhir/Patient/$take-on"
    return fhir_post("ehr", path, {"resourceType": "Parameters", "parameter": [
        {"name": "identifier", "valueIdentifier": {"system": system, "value": number}},
        {"name": "reason", "valueString": reason}]}, idempotent=False)


def end_take_on(pid: str, reason: str) -> dict[str, Any]:
    """The EHR's ``Patient/<pid>/$end-take-on``: the user's facility's take-on of the patient ended, with
    the reason given; the end's Parameters, or a BackendError (403: the facility has not taken the
    patient on). Idempotent at the EHR: a second click answers the same end."""
    return fhir_post("ehr", f"/fhir/Patient/{pid}/$end-take-on", {"resourceType": "Parameters", "parameter": [
        {"name": "reason", "valueString": reason}]}, idempotent=False)


def taken_on_here(patient: Mapping[str, Any] | None, facility: str | None) -> bool:
    """Whether a patient the clinic of ``facility`` reads is another facility's (neither managed by it nor
    with it as general practitioner): its way in is then a take-on, which it may end."""
    if not isinstance(patient, Mapping) or not facility:
        return False
    mine = f"Organization/{facility}"
    refs = [patient.get("managingOrganization") or {}, *(patient.get("generalPractitioner") or [])]
    return not any(isinstance(r, Mapping) and r.get("reference") == mine for r in refs)


# the EHR's words (sen_shared.fhir.access, sen_ehr.domain.take_on_failures), read for the instant they carry
_ENDED = re.compile(r"take-on of this patient was ended at (\d{4}-\d{2}-\d{2}T[\d:]+Z)")
_RETRY = re.compile(r"no number is compared before (\d{4}-\d{2}-\d{2}T[\d:]+Z)")


def ended_at(err: BackendError) -> str | None:
    """When the user's facility's take-on of the patient was ended, if that is why the EHR refused."""
    m = _ENDED.search(err.detail) if err.service == "ehr" and err.status == 403 else None
    return m.group(1) if m else None


def retry_at(err: BackendError) -> str | None:
    """Until when ``$take-on`` compares no number of the user's (too many wrong ones), if that is the refusal."""
    m = _RETRY.search(err.detail) if err.service == "ehr" and err.status == 429 else None
    return m.group(1) if m else None


def born_text(value: Any) -> str:
    """A FHIR ``birthDate`` as the pages write it: 17/06/1948, 06/1948 or 1948."""
    text = str(value or "")
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
        return f"{text[8:10]}/{text[5:7]}/{text[:4]}"
    if re.fullmatch(r"\d{4}-\d{2}", text):
        return f"{text[5:7]}/{text[:4]}"
    return text


def _same_words(a: str, b: str) -> bool:
    return " ".join(unicodedata.normalize("NFC", a).casefold().split()) == \
        " ".join(unicodedata.normalize("NFC", b).casefold().split())


def differences(record: Mapping[str, Any] | None, typed: Mapping[str, Any] | None) -> list[str]:
    """What the nurse typed on the registration form (``typed``: family, given, birthDate, gender) that the
    patient's record (taken on instead) says otherwise, one sentence each ("Ngày sinh trên hồ sơ là
    17/06/1948, khác với ngày đã nhập 01/01/1948"), so the nurse checks this is the person; the record
    is never changed. A name differs by its letters and accents, not case or spacing; a partial birth date
    on the record differs only when the typed date is outside it."""
    if not record or not typed:
        return []
    said: list[str] = []
    name = " ".join(str(typed.get(k) or "").strip() for k in ("family", "given")).strip()
    on_record = human_name(dict(record))
    if name and on_record != "—" and not _same_words(name, on_record):
        said.append(gettext("The name on the record is %(record)s, not the %(typed)s typed.",
                            record=on_record, typed=name))
    born, born_typed = str(record.get("birthDate") or ""), str(typed.get("birthDate") or "")
    if born and born_typed and not born_typed.startswith(born):
        said.append(gettext("The date of birth on the record is %(record)s, not the %(typed)s typed.",
                            record=born_text(born), typed=born_text(born_typed)))
    sex, sex_typed = str(record.get("gender") or ""), str(typed.get("gender") or "")
    if sex and sex_typed and sex != sex_typed:
        said.append(gettext("The sex on the record is %(record)s, not the %(typed)s typed.",
                            record=sex_text(sex).lower(), typed=sex_text(sex_typed).lower()))
    return said
