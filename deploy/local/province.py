"""The province Sen serves, from its province file: the settings every service takes from it.

A province file (``deploy/local/demo-province.json`` is the demo's; deploy/README.md, "The province
file", lists its fields) holds the facilities with their hub, the specialists, the patients to seed,
the bank account the VietQR codes pay into (and a facility's own, if it has one), the dashboard's goal
and baseline, and optionally the holidays, the base salary and a price list of its own. ``make run``
takes the file ``SEN_PROVINCE`` names (default: the demo's) and sets every service setting below from
it that is not set already;
``deploy/local/seed.py`` seeds the same file.

    python deploy/local/province.py env FILE      # shell lines: export NAME='value' (make run evals them)
    python deploy/local/province.py dotenv FILE   # NAME=value lines: k8s/overlays/prod/province.env, compose's env_file
    python deploy/local/province.py check FILE    # says what is wrong with the file, or nothing

A setting already in the environment (non-empty) is left out of ``env`` and ``dotenv``, as ``make run``
leaves an operator's own value alone; so is ``SEN_REPORT_BASELINE_FACILITIES`` when
``SEN_REPORT_FACILITY_BASELINE`` is given (the portal refuses a number and a list that disagree).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import sys
from datetime import date
from pathlib import Path
from typing import Any

LEVELS = ("central", "province", "district", "commune")
# the development sign-in's users a province file may make its people (the portal's SEN_PORTAL_DEMO_USERS)
DEMO_PEOPLE = ("clinic", "doctor", "cashier", "health-dept")
_BIN = re.compile(r"^\d{6}$")
_ACCOUNT = re.compile(r"^[0-9A-Za-z]{1,19}$")
_RECEIPT_PREFIX = re.compile(r"[A-Z0-9-]{1,12}")  # as billing checks SEN_FACILITY_RECEIPT_PREFIXES
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")  # as teleconsult checks SEN_ON_DUTY_LEADS' addresses


class ProvinceError(ValueError):
    """A province file Sen cannot run with, said with the file's name and the field at fault."""


def load(path: str | Path) -> dict[str, Any]:
    """The province file at ``path``, checked (:func:`check`); its ``priceList`` made absolute."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ProvinceError(f"province file {path}: cannot be read as JSON ({err})") from None
    if not isinstance(data, dict):
        raise ProvinceError(f"province file {path}: a JSON object is expected")
    try:
        check(data)
    except ProvinceError as err:
        raise ProvinceError(f"province file {path}: {err}") from None
    if data.get("priceList"):
        data["priceList"] = str((path.parent / data["priceList"]).resolve())
        if not Path(data["priceList"]).is_file():
            raise ProvinceError(f"province file {path}: priceList {data['priceList']} does not exist")
    return data


def _need(cond: bool, message: str) -> None:
    if not cond:
        raise ProvinceError(message)


def check(data: dict[str, Any]) -> None:
    """What Sen needs of a province: named; organizations with unique ids, known parents and levels,
    exactly one hub; practitioners of known organizations; a hub's on-duty lead one of its practitioners,
    its e-mail address an address;
    a bank account of a NAPAS BIN and an account number, owned by a known facility; a positive goal;
    holidays as dates; demo users of known facilities and practitioners."""
    _need(isinstance(data.get("province"), str) and data["province"].strip() != "", "province: the province's name")
    orgs = data.get("organizations")
    _need(isinstance(orgs, list) and len(orgs) > 0, "organizations: a list of the province's facilities")
    ids = [o.get("id") for o in orgs]
    _need(all(isinstance(i, str) and i for i in ids), "organizations: each needs an id")
    _need(len(set(ids)) == len(ids), f"organizations: ids used twice ({sorted({i for i in ids if ids.count(i) > 1})})")
    known = set(ids)
    for o in orgs:
        _need(bool(o.get("name")), f"organization {o['id']}: a name")
        _need(o.get("level") in (None, *LEVELS),
              f"organization {o['id']}: level {o.get('level')!r} is none of {LEVELS}")
        _need(o.get("partOf") in (None, *known), f"organization {o['id']}: partOf {o.get('partOf')!r} is unknown")
        _need(o.get("receiptPrefix") is None or (isinstance(o["receiptPrefix"], str)
                                                   and _RECEIPT_PREFIX.fullmatch(o["receiptPrefix"]) is not None),
              f"organization {o['id']}: receiptPrefix {o.get('receiptPrefix')!r}: what its receipt numbers start "
              "with, 1 to 12 upper-case letters, digits or dashes")
        if o.get("bank") is not None:  # the facility's own receiving account, its invoices' VietQR codes
            _bank(o["bank"], f"organization {o['id']}: bank")
    hubs = [o for o in orgs if o.get("hub")]
    _need(len(hubs) == 1, f"organizations: exactly one hub (\"hub\": true), not {len(hubs)}")
    practitioners = data.get("practitioners") or []
    for p in practitioners:
        _need(p.get("org") in known, f"practitioner {p.get('id')}: org {p.get('org')!r} is unknown")
    lead = hubs[0].get("onDutyLead")
    _need(lead is None or any(p.get("id") == lead and p.get("org") == hubs[0]["id"] for p in practitioners),
          f"organization {hubs[0]['id']}: onDutyLead {lead!r} is none of its practitioners")
    email = hubs[0].get("onDutyLeadEmail")
    _need(email is None or (lead is not None and isinstance(email, str) and _EMAIL.fullmatch(email) is not None),
          f"organization {hubs[0]['id']}: onDutyLeadEmail {email!r} is no e-mail address of an onDutyLead")
    bank = data.get("bank")
    if bank is not None:
        _bank(bank, "bank")
        _need(bank.get("facility") in (None, *known), f"bank.facility {bank.get('facility')!r} is unknown")
    goal = data.get("goal") or {}
    for key in ("facilities", "beforeSen"):
        value = goal.get(key)
        _need(value is None or (isinstance(value, int) and not isinstance(value, bool) and value >= 0),
              f"goal.{key}: a whole number")
    _need(goal.get("facilities") != 0, "goal.facilities: above 0")
    _need(not (goal.get("beforeSen") is not None and any(o.get("teleconsultBeforeSen") for o in orgs)),
          "goal.beforeSen: give it or mark the facilities teleconsultBeforeSen, not both")
    for day in data.get("holidays") or []:
        try:
            date.fromisoformat(day)
        except (TypeError, ValueError):
            raise ProvinceError(f"holidays: {day!r} is no YYYY-MM-DD date") from None
    practitioner_ids = {p.get("id") for p in practitioners}
    for who, person in _people(data).items():
        _need(who in DEMO_PEOPLE and isinstance(person, dict) and set(person) <= {"name", "facility", "practitioner"},
              f"demoUsers.{who}: one of {', '.join(DEMO_PEOPLE)}, with a name, facility or practitioner")
        _need(person.get("facility") in (None, *known),
              f"demoUsers.{who}.facility {person.get('facility')!r} is unknown")
        _need(person.get("practitioner") in (None, *practitioner_ids),
              f"demoUsers.{who}.practitioner {person.get('practitioner')!r} is unknown")
    salary = data.get("baseSalary")
    _need(salary is None or (isinstance(salary, int) and not isinstance(salary, bool) and salary > 0),
          "baseSalary: a whole number of đồng above 0")


def _bank(bank: Any, where: str) -> None:
    """A receiving account: a NAPAS BIN and an account number (``where``: the field it is, for the message)."""
    _need(isinstance(bank, dict) and _BIN.match(str(bank.get("bin", ""))) is not None,
          f"{where}.bin: the NAPAS BIN of the receiving bank, 6 digits")
    _need(_ACCOUNT.match(str(bank.get("account", ""))) is not None,
          f"{where}.account: the receiving account number, 1 to 19 letters or digits")


def _people(data: dict[str, Any]) -> dict[str, Any]:
    """The file's ``demoUsers`` but its ``comment``."""
    return {k: v for k, v in (data.get("demoUsers") or {}).items() if k != "comment"}


def hub(data: dict[str, Any]) -> dict[str, Any]:
    """The province's hub: the organization marked ``"hub": true``."""
    return next(o for o in data["organizations"] if o.get("hub"))


def settings(data: dict[str, Any]) -> dict[str, str]:
    """Every service setting the province file decides, by environment variable (all strings)."""
    orgs = data["organizations"]
    the_hub = hub(data)
    out: dict[str, str] = {
        # teleconsult: consults naming no hub go to it; a late one escalates to its on-duty lead
        "SEN_CONSULT_DEFAULT_HUB": the_hub["id"],
        # portal: the hub the clinics' consult form sends to
        "SEN_PORTAL_HUB": the_hub["id"],
        # billing: each facility's level (its price), name (its receipts) and district (the dashboard's filter)
        "SEN_FACILITY_LEVELS": json.dumps({o["id"]: o["level"] for o in orgs if o.get("level")}),
        "SEN_FACILITY_NAMES": json.dumps({o["id"]: o["name"] for o in orgs}, ensure_ascii=False),
        "SEN_FACILITY_DISTRICTS": json.dumps({o["id"]: o["district"] for o in orgs if o.get("district")},
                                             ensure_ascii=False),
        # portal: the dashboard's goal, remote diagnosis in every facility (those with a level) unless given
        "SEN_REPORT_FACILITY_GOAL": str((data.get("goal") or {}).get("facilities")
                                        or sum(1 for o in orgs if o.get("level"))),
    }
    if the_hub.get("onDutyLead"):  # with the address the late consult's message goes to, when given
        lead = f"Practitioner/{the_hub['onDutyLead']}"
        email = the_hub.get("onDutyLeadEmail")
        out["SEN_ON_DUTY_LEADS"] = json.dumps({the_hub["id"]: {"lead": lead, "email": email} if email else lead})
    before = (data.get("goal") or {}).get("beforeSen")
    if before is not None:  # how many used teleconsultation before Sen, without naming them
        out["SEN_REPORT_FACILITY_BASELINE"] = str(before)
    else:  # those marked, by name: one of them requesting consults through Sen is not counted again as new
        out["SEN_REPORT_BASELINE_FACILITIES"] = json.dumps([o["id"] for o in orgs if o.get("teleconsultBeforeSen")])
    bank = data.get("bank")
    if bank:
        out["SEN_BANK_BIN"], out["SEN_BANK_ACCOUNT"] = str(bank["bin"]), str(bank["account"])
        if bank.get("accountName"):
            out["SEN_BANK_ACCOUNT_NAME"] = bank["accountName"]
        if bank.get("facility"):  # whose unmatched-transfers queue a transfer to the account joins
            out["SEN_BANK_ACCOUNT_FACILITIES"] = json.dumps({str(bank["account"]): bank["facility"]})
    own = {o["id"]: {"bin": str(o["bank"]["bin"]), "account": str(o["bank"]["account"]),
                     "name": o["bank"].get("accountName") or ""} for o in orgs if o.get("bank")}
    if own:  # billing: each facility paid into its own account (a transfer to it unmatched joins its queue)
        out["SEN_FACILITY_BANK_ACCOUNTS"] = json.dumps(own, ensure_ascii=False)
    codes = {o["id"]: o["receiptPrefix"] for o in orgs if o.get("receiptPrefix")}
    if codes:  # billing: what those facilities' receipt numbers start with (the others: their ids')
        out["SEN_FACILITY_RECEIPT_PREFIXES"] = json.dumps(codes)
    if data.get("baseSalary"):
        out["SEN_BASE_SALARY"] = str(data["baseSalary"])
    if data.get("priceList"):
        out["SEN_PRICE_LIST_FILE"] = data["priceList"]
    if _people(data):  # the development sign-in's users as the province's people
        out["SEN_PORTAL_DEMO_USERS"] = json.dumps(_people(data), ensure_ascii=False)
    if data.get("holidays"):
        out["SEN_TELECONSULT_HOLIDAYS"] = ",".join(data["holidays"])
    population = data.get("population") or {}
    if population.get("province"):
        out["SEN_REPORT_POPULATION"] = str(population["province"])
    if population.get("districts"):
        out["SEN_REPORT_DISTRICT_POPULATIONS"] = json.dumps(population["districts"], ensure_ascii=False)
    return out


def unset(values: dict[str, str], environ: dict[str, str] | os._Environ[str] = os.environ) -> dict[str, str]:
    """``values`` but those the environment sets already (non-empty): an operator's own value wins. The
    baseline is given one way only: the environment's number (list) leaves out the file's list (number)."""
    kept = {k: v for k, v in values.items() if not environ.get(k)}
    if environ.get("SEN_REPORT_FACILITY_BASELINE"):
        kept.pop("SEN_REPORT_BASELINE_FACILITIES", None)
    if environ.get("SEN_REPORT_BASELINE_FACILITIES"):
        kept.pop("SEN_REPORT_FACILITY_BASELINE", None)
    return kept


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2 or args[0] not in ("env", "dotenv", "check"):
        sys.stderr.write("usage: province.py env|dotenv|check FILE\n")
        return 2
    try:
        data = load(args[1])
    except ProvinceError as err:
        sys.stderr.write(f"{err}\n")
        return 1
    if args[0] == "check":
        return 0
    values = unset(settings(data))
    for name, value in values.items():
        print(f"export {name}={shlex.quote(value)}" if args[0] == "env" else f"{name}={value}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
