"""Bringing one facility onto Sen: what the province file must say of it, and what each service will see.

The province file (deploy/local/province.py reads and checks it; deploy/README.md, "The province file") is the
one place a facility is described: its Organization for the EHR, its level, district and name for billing and
the dashboard, its bank account for the VietQR codes. This tool adds no second description: it reads that file
with ``province.load`` and the settings with ``province.settings``, and says, for one facility, whether the entry
is complete, and if so what each service will see of it. It changes nothing, so running it again says the same.

    python deploy/local/facility.py check FILE ID    # what each service sees of the facility, or what to fix
    python deploy/local/facility.py bundle FILE ID   # the EHR's transaction Bundle for it (PUTs with fixed ids)

``make facility-check FACILITY=<id>`` runs ``check`` on ``SEN_PROVINCE`` (default: the demo's).
docs/operations.md, "Bringing a facility on", is the whole procedure.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import province  # noqa: E402  (deploy/local/province.py: the province file, read and checked)


def _facility(data: dict[str, Any], fid: str) -> dict[str, Any] | None:
    return next((o for o in data["organizations"] if o["id"] == fid), None)


def _bank(data: dict[str, Any], org: dict[str, Any]) -> tuple[dict[str, Any] | None, str]:
    """The account the facility's invoices are paid into, and the setting it comes from (billing's
    ``BillingSettings.bank_of``: the facility's own, else the province's)."""
    if org.get("bank"):
        return org["bank"], "SEN_FACILITY_BANK_ACCOUNTS"
    if data.get("bank"):
        return data["bank"], "SEN_BANK_BIN, SEN_BANK_ACCOUNT (the province's account)"
    return None, ""


def _consult_price(data: dict[str, Any], level: str) -> tuple[str, int] | None:
    """The general consult price at ``level`` in the price list billing loads (the file's ``priceList``,
    else the one shipped): (its definition's id, đồng), or None."""
    from sen_billing.domain import pricing

    entries = {d["id"]: d for d in pricing.read_file(data.get("priceList") or None)}
    for rid in pricing.consult_candidates(None, level):
        if rid in entries and entries[rid].get("status", "active") == "active":
            return rid, pricing.price(entries[rid])
    return None


def _receipt_prefixes(data: dict[str, Any]) -> dict[str, str]:
    """SEN_FACILITY_RECEIPT_PREFIXES as the file makes it (the organizations' receiptPrefix)."""
    return json.loads(province.settings(data).get("SEN_FACILITY_RECEIPT_PREFIXES") or "{}")


def problems(data: dict[str, Any], fid: str) -> list[str]:
    """What keeps facility ``fid`` of a checked province file from working in every service, each said with
    the field to fix; empty when nothing does."""
    from sen_billing.domain.receipts import clash_message, prefix_clashes

    org = _facility(data, fid)
    if org is None:
        return [f"organizations: no organization has the id {fid!r} (add it to organizations[])"]
    out: list[str] = []
    where = f"organization {fid}"
    if org.get("type") != "prov":
        out.append(f"{where}: type {org.get('type')!r}: a facility's is 'prov' ('govt' is the department)")
    if not org.get("city"):
        out.append(f"{where}: city: its commune or town, as its address writes it (the EHR's Organization)")
    level = org.get("level")
    if not level:
        out.append(f"{where}: level: one of {', '.join(province.LEVELS)} (its prices; the dashboard's goal "
                   "counts the facilities with a level)")
    district = org.get("district")
    districts = sorted((data.get("population") or {}).get("districts") or {})
    if not district:
        out.append(f"{where}: district: as its address writes it (the dashboard's district filter, billing's "
                   "invoices and payments)")
    elif districts and district not in districts:
        out.append(f"{where}: district {district!r} is none of population.districts ({', '.join(districts)}): "
                   "a misspelt district is a district of its own on the dashboard")
    bank, _ = _bank(data, org)
    if bank is None:
        out.append(f"{where}: bank: neither its own account (organizations[].bank: bin, account, accountName) "
                   "nor the province's (bank): its invoices would get no VietQR code")
    # as billing refuses to start (BillingSettings): any two facilities whose receipts would print the same prefix
    prefixes = _receipt_prefixes(data)
    for group in prefix_clashes([o["id"] for o in data["organizations"]], prefixes):
        named = fid if fid in group else group[0]
        out.append(f"organization {named}: receiptPrefix: {clash_message(group, prefixes)} "
                   "(or ids that differ in their first 12 characters)")
    if level and _consult_price(data, level) is None:
        out.append(f"priceList: no consult price for level {level!r} (consult-any-{level} or "
                   "consult-any-district): its consults could not be charged")
    the_hub = province.hub(data)
    if not any(p.get("org") == the_hub["id"] for p in data.get("practitioners") or []):
        out.append(f"organization {the_hub['id']}: the hub has no practitioners: nobody would answer the "
                   "facility's consults")
    goal = (data.get("goal") or {}).get("facilities")
    with_level = sum(1 for o in data["organizations"] if o.get("level"))
    if goal is not None and with_level > goal:
        out.append(f"goal.facilities: {goal}, below the {with_level} facilities with a level: raise it")
    return out


def report(data: dict[str, Any], fid: str) -> list[str]:
    """What each service will see of facility ``fid`` (whose entry :func:`problems` found complete)."""
    from sen_billing.domain.invoices import vnd
    from sen_billing.domain.receipts import series_prefix

    org = _facility(data, fid)
    assert org is not None
    values = province.settings(data)
    the_hub = province.hub(data)
    own = [p for p in data.get("practitioners") or [] if p.get("org") == fid]
    specialists = [p["id"] for p in data.get("practitioners") or [] if p.get("org") == the_hub["id"]]
    bank, source = _bank(data, org)
    assert bank is not None
    prefixes = _receipt_prefixes(data)
    rid, amount = _consult_price(data, org["level"]) or ("", 0)
    part_of = f", part of Organization/{org['partOf']}" if org.get("partOf") else ""
    goal = values["SEN_REPORT_FACILITY_GOAL"]
    before = ("counted before Sen (teleconsultBeforeSen)" if org.get("teleconsultBeforeSen")
              else "counted as using Sen from its first consult request")
    lines = [
        f"{org['name']} ({fid}), {org['district']}, {data['province']}: complete",
        f"ehr          Organization/{fid} '{org['name']}', address {org['city']}, {org['district']}{part_of}",
        "             " + (", ".join(f"Practitioner/{p['id']} + PractitionerRole/{p['id']}-role" for p in own)
                           or "no practitioners of its own in the file (its clinic users act for the facility)"),
        "             load it: facility.py bundle FILE ID, POSTed to <EHR>/fhir with an admin token",
        f"identity     its users' tokens: facility={fid}, roles clinic and/or cashier"
        + (f"; a clinic user's practitioner= one of {', '.join(p['id'] for p in own)}" if own else ""),
        f"teleconsult  its consults go to the hub Organization/{the_hub['id']} (SEN_CONSULT_DEFAULT_HUB), "
        f"answered by {', '.join(specialists)}",
        f"portal       consult form to {values['SEN_PORTAL_HUB']} (SEN_PORTAL_HUB); dashboard: one of the goal's "
        f"{goal} facilities (SEN_REPORT_FACILITY_GOAL), {before}",
        f"billing      receipts name it '{org['name']}' (SEN_FACILITY_NAMES), numbered {series_prefix(fid, prefixes)}"
        f"-<year>-000001 on (its own series{'; SEN_FACILITY_RECEIPT_PREFIXES' if fid in prefixes else ''})",
        f"             level {org['level']} (SEN_FACILITY_LEVELS): a consult {vnd(amount)} ({rid}); district "
        f"{org['district']} (SEN_FACILITY_DISTRICTS)",
        f"             VietQR into {bank['bin']} {bank['account']}"
        + (f" ({bank['accountName']})" if bank.get("accountName") else "") + f": {source}",
    ]
    return lines


def bundle(data: dict[str, Any], fid: str) -> dict[str, Any]:
    """The EHR's transaction Bundle for facility ``fid``: its Organization and its practitioners with their
    roles, PUTs with the ids the file gives (so loading it twice leaves one of each), as seed.py writes them."""
    import seed  # deploy/local/seed.py: the same resources `make run` seeds

    org = _facility(data, fid)
    assert org is not None
    resources = [seed._org(org, data["province"])]
    for p in data.get("practitioners") or []:
        if p.get("org") == fid:
            resources.extend(seed._practitioner(p))
    return {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": r, "request": {"method": "PUT", "url": f"{r['resourceType']}/{r['id']}"}} for r in resources]}


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 3 or args[0] not in ("check", "bundle"):
        sys.stderr.write("usage: facility.py check|bundle FILE FACILITY_ID\n")
        return 2
    try:
        data = province.load(args[1])
    except province.ProvinceError as err:
        sys.stderr.write(f"{err}\n")
        return 1
    found = problems(data, args[2])
    if found:
        sys.stderr.write(f"facility {args[2]} of {args[1]} is not ready; fix:\n"
                         + "".join(f"  - {p}\n" for p in found))
        return 1
    if args[0] == "check":
        print("\n".join(report(data, args[2])))
    else:
        print(json.dumps(bundle(data, args[2]), ensure_ascii=False, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
