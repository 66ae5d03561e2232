"""Bringing a facility on (deploy/local/facility.py): a facility's entry in the province file is complete or is
refused with what to fix; a complete one is told as each service will see it; running it again changes nothing;
the settings it makes are the ones billing reads (its own bank account for its VietQR codes)."""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
LOCAL = ROOT / "deploy" / "local"
DEMO = LOCAL / "demo-province.json"
sys.path.insert(0, str(LOCAL))
import facility  # noqa: E402
import province  # noqa: E402

NEW = "tyt-my-long"
# with no receiptPrefix, receipts print an id's first 12 characters: TTYT-HUYEN-C, as ttyt-huyen-cao-lanh
TWIN = "ttyt-huyen-chau-thanh"
NEW_BANK = {"bin": "970418", "account": "2101000789", "accountName": "TRAM Y TE XA MY LONG"}


def with_new_facility() -> dict[str, Any]:
    """The demo province and one more commune health station, with its own bank account and practitioner."""
    data = json.loads(DEMO.read_text(encoding="utf-8"))
    data["organizations"].append({
        "id": NEW, "name": "Trạm Y tế xã Mỹ Long", "type": "prov", "level": "commune", "city": "Mỹ Long",
        "district": "Huyện Cao Lãnh", "partOf": "ttyt-huyen-cao-lanh", "bank": dict(NEW_BANK)})
    data["practitioners"].append({
        "id": "ys-ngo-thi-thu", "family": "Ngô", "given": ["Thị", "Thu"], "qualification": "y-si", "gender": "female",
        "org": NEW, "specialty": "Y sĩ đa khoa", "specialtyCode": "394814009", "specialtyDisplay": "General practice"})
    return data


def _write(tmp_path: Path, data: dict[str, Any]) -> Path:
    path = tmp_path / "province.json"
    path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    return path


def test_a_complete_facility_is_told_as_each_service_sees_it(tmp_path, capsys) -> None:
    path = _write(tmp_path, with_new_facility())
    assert facility.main(["check", str(path), NEW]) == 0
    out = capsys.readouterr().out
    assert "Trạm Y tế xã Mỹ Long (tyt-my-long), Huyện Cao Lãnh, Đồng Tháp: complete" in out
    assert "Organization/tyt-my-long" in out and "part of Organization/ttyt-huyen-cao-lanh" in out
    assert "facility=tyt-my-long" in out and "practitioner= one of ys-ngo-thi-thu" in out
    assert "its consults go to the hub Organization/bvdk-dong-thap" in out
    assert "one of the goal's 165 facilities" in out
    assert "a consult 100.000 ₫ (consult-any-commune)" in out
    assert "numbered TYT-MY-LONG-<year>-000001" in out
    assert "VietQR into 970418 2101000789 (TRAM Y TE XA MY LONG): SEN_FACILITY_BANK_ACCOUNTS" in out


def test_a_facility_without_an_account_of_its_own_is_paid_into_the_provinces(capsys) -> None:
    assert facility.main(["check", str(DEMO), "tyt-my-hiep"]) == 0
    assert "VietQR into 970436 0011001234567 (SO Y TE DONG THAP DEMO): SEN_BANK_BIN" in capsys.readouterr().out


def _org(data: dict[str, Any], fid: str = NEW) -> dict[str, Any]:
    return next(o for o in data["organizations"] if o["id"] == fid)


def _no_bank(d: dict[str, Any]) -> None:
    _org(d).pop("bank")
    d.pop("bank")


@pytest.mark.parametrize(("change", "said"), [
    (lambda d: _org(d).pop("level"), "organization tyt-my-long: level: one of central, province, district, commune"),
    (lambda d: _org(d).pop("district"), "organization tyt-my-long: district: as its address writes it"),
    (lambda d: _org(d).update(district="Huyen Cao Lanh"),
     "district 'Huyen Cao Lanh' is none of population.districts (Huyện Cao Lãnh, Huyện Tháp Mười, Thành phố Cao Lãnh)"),
    (lambda d: _org(d).pop("city"), "organization tyt-my-long: city"),
    (lambda d: _org(d).update(type="govt"), "organization tyt-my-long: type 'govt'"),
    (lambda d: _org(d)["bank"].pop("bin"), "organization tyt-my-long: bank.bin: the NAPAS BIN"),
    (lambda d: _org(d)["bank"].update(account="2101-000"), "organization tyt-my-long: bank.account"),
    (_no_bank, "organization tyt-my-long: bank: neither its own account"),
    (lambda d: _org(d).update(id=TWIN) or d["practitioners"][-1].update(org=TWIN),
     "organization ttyt-huyen-chau-thanh: receiptPrefix: the receipts of ttyt-huyen-cao-lanh and ttyt-huyen-chau-thanh "
     "would both be numbered TTYT-HUYEN-C-<year>-…: give each its own receiptPrefix"),
    (lambda d: _org(d).update(receiptPrefix="TTYT-HUYEN-C"),  # a code that is another facility's prefix
     "organization tyt-my-long: receiptPrefix: the receipts of ttyt-huyen-cao-lanh and tyt-my-long would both be "
     "numbered TTYT-HUYEN-C-<year>-…"),
    (lambda d: _org(d).update(receiptPrefix="tyt-ml"),
     "organization tyt-my-long: receiptPrefix 'tyt-ml': what its receipt numbers start with, 1 to 12 upper-case"),
    (lambda d: _org(d).update(partOf="ttyt-nowhere"), "organization tyt-my-long: partOf 'ttyt-nowhere' is unknown"),
    (lambda d: d.update(practitioners=[p for p in d["practitioners"] if p["org"] != "bvdk-dong-thap"],
                        organizations=[{k: v for k, v in o.items() if k not in ("onDutyLead", "onDutyLeadEmail")}
                                       for o in d["organizations"]]),
     "organization bvdk-dong-thap: the hub has no practitioners"),
    (lambda d: d["goal"].update(facilities=5), "goal.facilities: 5, below the 6 facilities with a level"),
    (lambda d: d["organizations"].remove(_org(d)) or d["practitioners"].pop(),
     "organizations: no organization has the id 'tyt-my-long'"),
])
def test_an_incomplete_facility_is_refused_saying_what_to_fix(tmp_path, capsys, change, said) -> None:
    data = with_new_facility()
    change(data)
    fid = TWIN if any(o["id"] == TWIN for o in data["organizations"]) else NEW
    assert facility.main(["check", str(_write(tmp_path, data)), fid]) == 1
    captured = capsys.readouterr()
    assert said in captured.err
    assert captured.out == ""  # nothing told of a facility that is not ready


def test_every_problem_is_said_at_once(tmp_path, capsys) -> None:
    data = with_new_facility()
    for key in ("level", "district", "city"):
        _org(data).pop(key)
    assert facility.main(["check", str(_write(tmp_path, data)), NEW]) == 1
    err = capsys.readouterr().err
    assert err.count("\n  - ") == 3 and "level:" in err and "district:" in err and "city:" in err


def test_a_receipt_prefix_tells_apart_two_facilities_whose_ids_agree_and_billing_prints_it(
        monkeypatch, tmp_path, capsys) -> None:
    """ttyt-huyen-chau-thanh beside ttyt-huyen-cao-lanh, given its code: complete, numbered with the code, and
    billing (whose settings the file makes) starts and prints it."""
    from sen_billing.config import settings_from_env
    from sen_billing.domain.receipts import series_prefix

    data = with_new_facility()
    _org(data).update(id=TWIN, receiptPrefix="TTYT-CT")
    data["practitioners"][-1].update(org=TWIN)
    path = _write(tmp_path, data)
    assert facility.main(["check", str(path), TWIN]) == 0
    out = capsys.readouterr().out
    assert "numbered TTYT-CT-<year>-000001 on (its own series; SEN_FACILITY_RECEIPT_PREFIXES)" in out
    values = province.settings(province.load(path))
    assert json.loads(values["SEN_FACILITY_RECEIPT_PREFIXES"]) == {TWIN: "TTYT-CT"}
    env = {**values, "SEN_ENV": "test", "MONGO_URL": "mongodb://127.0.0.1:1", "AMQP_URL": "amqp://127.0.0.1:1",
           "SEN_DEV_JWT_KEY": str(tmp_path / "key.pem"), "SEN_PRICE_LIST_FILE": ""}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = settings_from_env()
    assert series_prefix(TWIN, settings.receipt_prefixes) == "TTYT-CT"
    assert series_prefix("ttyt-huyen-cao-lanh", settings.receipt_prefixes) == "TTYT-HUYEN-C"


def test_billing_refuses_the_settings_of_a_file_whose_facilities_print_alike(monkeypatch, tmp_path, capsys) -> None:
    """What the facility check refuses, billing refuses at start, naming both facilities."""
    from sen_billing.config import settings_from_env

    data = with_new_facility()
    _org(data).update(id=TWIN)
    data["practitioners"][-1].update(org=TWIN)
    values = province.settings(province.load(_write(tmp_path, data)))
    env = {**values, "SEN_ENV": "test", "MONGO_URL": "mongodb://127.0.0.1:1", "AMQP_URL": "amqp://127.0.0.1:1",
           "SEN_DEV_JWT_KEY": str(tmp_path / "key.pem"), "SEN_PRICE_LIST_FILE": ""}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SystemExit):
        settings_from_env()
    assert ("SEN_FACILITY_RECEIPT_PREFIXES: the receipts of ttyt-huyen-cao-lanh and ttyt-huyen-chau-thanh would both "
            "be numbered TTYT-HUYEN-C-<year>-…") in capsys.readouterr().err


def test_running_it_again_changes_nothing(tmp_path, capsys) -> None:
    path = _write(tmp_path, with_new_facility())
    before = path.read_bytes()
    runs = []
    for _ in range(2):
        assert facility.main(["check", str(path), NEW]) == 0
        assert facility.main(["bundle", str(path), NEW]) == 0
        runs.append(capsys.readouterr().out)
    assert runs[0] == runs[1]
    assert path.read_bytes() == before


def test_the_ehr_bundle_is_the_facility_and_its_practitioners_as_the_seed_writes_them(tmp_path, capsys) -> None:
    data = with_new_facility()
    assert facility.main(["bundle", str(_write(tmp_path, data)), NEW]) == 0
    bundle = json.loads(capsys.readouterr().out)
    assert bundle["type"] == "transaction"
    urls = [e["request"]["url"] for e in bundle["entry"]]
    assert urls == ["Organization/tyt-my-long", "Practitioner/ys-ngo-thi-thu", "PractitionerRole/ys-ngo-thi-thu-role"]
    assert {e["request"]["method"] for e in bundle["entry"]} == {"PUT"}  # fixed ids: loading it twice makes one
    org = bundle["entry"][0]["resource"]
    assert org["address"][0]["district"] == "Huyện Cao Lãnh" and org["address"][0]["state"] == "Đồng Tháp"
    assert org["partOf"] == {"reference": "Organization/ttyt-huyen-cao-lanh"}
    role = bundle["entry"][2]["resource"]
    assert role["organization"] == {"reference": "Organization/tyt-my-long"}


def test_a_bundle_of_a_facility_not_ready_is_refused(tmp_path, capsys) -> None:
    data = with_new_facility()
    _org(data).pop("level")
    assert facility.main(["bundle", str(_write(tmp_path, data)), NEW]) == 1
    assert capsys.readouterr().out == ""


def test_billing_reads_the_facilitys_own_account_from_the_settings_the_file_makes(monkeypatch, tmp_path) -> None:
    """One source of truth: the settings province.py makes of the file are what billing's own parser reads."""
    from sen_billing.config import settings_from_env

    values = province.settings(province.load(_write(tmp_path, with_new_facility())))
    assert json.loads(values["SEN_FACILITY_BANK_ACCOUNTS"]) == {
        NEW: {"bin": "970418", "account": "2101000789", "name": "TRAM Y TE XA MY LONG"}}
    env = {**values, "SEN_ENV": "test", "MONGO_URL": "mongodb://127.0.0.1:1", "AMQP_URL": "amqp://127.0.0.1:1",
           "SEN_DEV_JWT_KEY": str(tmp_path / "key.pem"), "SEN_PRICE_LIST_FILE": ""}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = settings_from_env()
    own = settings.bank_of(NEW)
    assert (own.bin, own.account, own.name) == ("970418", "2101000789", "TRAM Y TE XA MY LONG")
    province_account = settings.bank_of("tyt-my-hiep")
    assert (province_account.bin, province_account.account) == ("970436", "0011001234567")
    # a transfer to its account that matches no invoice waits in its own cashiers' queue
    assert settings.account_facilities == {"0011001234567": "tyt-my-hiep", "2101000789": NEW}
    assert settings.level_of(NEW) == "commune" and settings.district_of(NEW) == "Huyện Cao Lãnh"
    assert settings.name_of(NEW) == "Trạm Y tế xã Mỹ Long"


def test_a_facility_bank_missing_its_bin_stops_billing_naming_the_key(monkeypatch, tmp_path, capsys) -> None:
    from sen_billing.config import settings_from_env

    env = {"SEN_ENV": "test", "MONGO_URL": "mongodb://127.0.0.1:1", "AMQP_URL": "amqp://127.0.0.1:1",
           "SEN_DEV_JWT_KEY": str(tmp_path / "key.pem"),
           "SEN_FACILITY_BANK_ACCOUNTS": json.dumps({NEW: {"account": "2101000789"}})}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SystemExit):
        settings_from_env()
    assert "SEN_FACILITY_BANK_ACCOUNTS.tyt-my-long.bin is required" in capsys.readouterr().err


def test_the_demo_and_second_provinces_facilities_are_all_complete() -> None:
    for path in (DEMO, ROOT / "tests" / "e2e" / "provinces" / "bac-sen.json"):
        data = province.load(path)
        for org in data["organizations"]:
            if org.get("level"):
                assert facility.problems(copy.deepcopy(data), org["id"]) == [], (path.name, org["id"])
