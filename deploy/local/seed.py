"""Seed a province (facilities, practitioners, patients with Vietnamese names)
into the EHR through its FHIR API, as one transaction of PUTs with fixed ids,
so seeding twice changes nothing; and its hub specialists' Schedules into
teleconsult. The province file is ``--data``, else the one ``SEN_PROVINCE``
names, else the demo province (deploy/README.md, "The province file").

    python deploy/local/seed.py --ehr http://127.0.0.1:8081 [--data my-province.json]
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

import httpx
from sen_shared import bhyt
from sen_shared.auth import issue_dev_token

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import province  # noqa: E402  (deploy/local/province.py: the province file, read and checked)

SYS_CCCD = "https://fhir.sen.vn/sid/cccd"
SYS_BHYT = bhyt.CARD_SYSTEM


def _org(o: dict[str, Any], state: str) -> dict[str, Any]:
    res: dict[str, Any] = {
        "resourceType": "Organization", "id": o["id"], "active": True, "name": o["name"],
        "type": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/organization-type",
                              "code": o["type"]}]}],
        # the district: teleconsult reads it from here into the consult's events (and billing into the
        # consult's invoice and its payments), so the dashboard counts the facility under it
        "address": [{"city": o["city"], **({"district": o["district"]} if o.get("district") else {}),
                     "state": state, "country": "VN"}],
    }
    if o.get("partOf"):
        res["partOf"] = {"reference": f"Organization/{o['partOf']}"}
    return res


# a practitioner's qualification in the demo data -> (the title written before their name, the qualification
# as Practitioner.qualification says it): a doctor (bác sĩ) is "BS.", an assistant doctor (y sĩ) "YS."
QUALIFICATIONS = {"bac-si": ("BS.", "Bác sĩ"), "y-si": ("YS.", "Y sĩ")}


def specialty(p: dict[str, Any]) -> dict[str, Any]:
    """A practitioner's specialty: the SNOMED CT code with its official English display (FHIR's
    c80-practice-codes), the Vietnamese name as the concept's text."""
    return {"coding": [{"system": "http://snomed.info/sct", "code": p["specialtyCode"],
                        "display": p["specialtyDisplay"]}], "text": p["specialty"]}


def _practitioner(p: dict[str, Any]) -> list[dict[str, Any]]:
    if p.get("qualification") not in QUALIFICATIONS:
        raise ValueError(f"practitioner {p['id']}: qualification {p.get('qualification')!r} is none of "
                         f"{sorted(QUALIFICATIONS)}")
    title, qualification = QUALIFICATIONS[p["qualification"]]
    prac = {"resourceType": "Practitioner", "id": p["id"], "active": True, "gender": p["gender"],
            "name": [{"family": p["family"], "given": p["given"], "prefix": [title],
                      "text": " ".join([p["family"], *p["given"]])}],
            "qualification": [{"code": {"text": qualification}}]}
    role = {"resourceType": "PractitionerRole", "id": f"{p['id']}-role", "active": True,
            "practitioner": {"reference": f"Practitioner/{p['id']}"},
            "organization": {"reference": f"Organization/{p['org']}"},
            "specialty": [specialty(p)]}
    return [prac, role]


def _patient(p: dict[str, Any], state: str) -> dict[str, Any]:
    return {
        "resourceType": "Patient", "id": p["id"], "active": True, "gender": p["gender"],
        "birthDate": p["birthDate"],
        "identifier": [
            {"system": SYS_CCCD, "value": p["cccd"],
             "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "NI"}],
                      "text": "Căn cước công dân"}},
            {"system": SYS_BHYT, "value": p["bhyt"],
             "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "SN"}],
                      "text": "Thẻ bảo hiểm y tế"}},
        ],
        "name": [{"use": "official", "family": p["family"], "given": p["given"],
                  "text": " ".join([p["family"], *p["given"]])}],
        "telecom": [{"system": "phone", "value": p["phone"], "use": "mobile"}],
        "address": [{"city": p["city"], "district": p["district"], "state": state, "country": "VN"}],
        "managingOrganization": {"reference": f"Organization/{p['org']}"},
        "communication": [{"language": {"coding": [{"system": "urn:ietf:bcp:47", "code": "vi"}]},
                           "preferred": True}],
    }


def province_bundle(data: dict[str, Any]) -> dict[str, Any]:
    resources = [_org(o, data["province"]) for o in data["organizations"]]
    for p in data["practitioners"]:
        resources.extend(_practitioner(p))
    resources.extend(_patient(p, data["province"]) for p in data["patients"])
    return {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": r, "request": {"method": "PUT", "url": f"{r['resourceType']}/{r['id']}"}}
        for r in resources]}


def schedule_id(practitioner_id: str) -> str:
    return f"sched-{practitioner_id}"[:51]


def teleconsult_bundle(data: dict[str, Any]) -> dict[str, Any]:
    """The hub specialists' Schedules, each carrying the province's weekly availability: slots are
    computed from it for a rolling horizon, so there is always something to find and book."""
    from sen_teleconsult.domain.availability import schedule_resource

    hubs = {o["id"] for o in data["organizations"] if o.get("hub")}
    rules = data.get("teleconsultAvailability") or {}
    windows = [(w["days"], w["start"], w["end"]) for w in rules.get("windows", [])]
    breaks = [(b["start"], b["end"]) for b in rules.get("breaks", [])]
    resources = [
        schedule_resource(schedule_id(p["id"]), practitioner=f"Practitioner/{p['id']}",
                          organization=f"Organization/{p['org']}", specialty_code=p["specialtyCode"],
                          specialty_text=p["specialty"], specialty_display=p["specialtyDisplay"],
                          windows=windows, breaks=breaks,
                          slot_minutes=int(rules.get("slotMinutes", 30)),
                          comment=f"Lịch hội chẩn từ xa — {p['specialty']}")
        for p in data["practitioners"] if p["org"] in hubs and windows]
    return {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": r, "request": {"method": "PUT", "url": f"Schedule/{r['id']}"}} for r in resources]}


def post_bundle(base: str, bundle: dict[str, Any], token: str, what: str) -> bool:
    """POST the transaction ``bundle`` to ``<base>/fhir``; False (after saying so) unless it answers 200."""
    r = httpx.post(f"{base}/fhir", json=bundle, timeout=60,
                   headers={"Authorization": f"Bearer {token}", "Content-Type": "application/fhir+json"})
    if r.status_code != 200:
        sys.stderr.write(f"{what} failed: HTTP {r.status_code}: {r.text[:500]}\n")
        return False
    return True


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ehr", default=os.environ.get("SEN_EHR_URL", "http://127.0.0.1:8081"))
    ap.add_argument("--teleconsult", default=os.environ.get("SEN_TELECONSULT_URL", "http://127.0.0.1:8082"),
                    help="teleconsult base URL (the hub specialists' schedules); empty to skip")
    ap.add_argument("--data", default=os.environ.get("SEN_PROVINCE") or str(HERE / "demo-province.json"),
                    help="the province file (default: SEN_PROVINCE, else the demo province)")
    a = ap.parse_args(argv)
    try:
        data = province.load(a.data)
    except province.ProvinceError as err:
        sys.stderr.write(f"{err}\n")
        return 1
    token = issue_dev_token(os.environ.get("SEN_DEV_JWT_KEY", ".sen/dev-jwt.pem"), "admin",
                            issuer=os.environ.get("SEN_JWT_ISSUER", "sen-dev"),
                            audience=os.environ.get("SEN_JWT_AUDIENCE", "sen"), sub="seed")
    bundle = province_bundle(data)
    if not post_bundle(a.ehr, bundle, token, "seeding"):
        return 1
    sys.stderr.write(f"seeded {data['province']}: {len(bundle['entry'])} resources "
                     f"({len(data['organizations'])} facilities, {len(data['practitioners'])} practitioners, "
                     f"{len(data['patients'])} patients)\n")
    if a.teleconsult:
        schedules = teleconsult_bundle(data)
        if not post_bundle(a.teleconsult, schedules, token, "seeding the schedules"):
            return 1
        sys.stderr.write(f"seeded {len(schedules['entry'])} hub specialists' schedules: find a slot with "
                         f"POST {a.teleconsult}/fhir/Appointment/$find (start, end)\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
