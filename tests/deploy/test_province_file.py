"""The province file (deploy/local/province.py): what Sen needs of it, said with the field at fault; the settings
it decides; and the seed writing the province's own name into every address (it wrote "Đồng Tháp" whatever the
file said)."""

from __future__ import annotations

import copy
import importlib.util
import json
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
LOCAL = ROOT / "deploy" / "local"
SECOND = ROOT / "tests" / "e2e" / "provinces" / "bac-sen.json"
sys.path.insert(0, str(LOCAL))
import province  # noqa: E402


def _seed() -> Any:
    spec = importlib.util.spec_from_file_location("sen_demo_seed", LOCAL / "seed.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _data() -> dict[str, Any]:
    return json.loads(SECOND.read_text(encoding="utf-8"))


def test_both_province_files_load() -> None:
    assert province.load(LOCAL / "demo-province.json")["province"] == "Đồng Tháp"
    data = province.load(SECOND)
    assert data["priceList"] == str(SECOND.parent / "bac-sen-prices.json")  # made absolute, from the file's folder
    assert province.hub(data)["id"] == "bvdk-bac-sen"


@pytest.mark.parametrize(("change", "said"), [
    (lambda d: d.pop("province"), "province: the province's name"),
    (lambda d: d["organizations"][2].update(hub=True), "exactly one hub"),
    (lambda d: d["organizations"][1].pop("hub"), "exactly one hub"),
    (lambda d: d["organizations"][3].update(level="tinh"), "organization ttyt-phu-my: level 'tinh'"),
    (lambda d: d["organizations"][4].update(partOf="nowhere"), "organization tyt-an-binh: partOf 'nowhere'"),
    (lambda d: d["organizations"].append(dict(d["organizations"][5])), "ids used twice (['tyt-an-hoa'])"),
    (lambda d: d["practitioners"][0].update(org="nowhere"), "practitioner bs-hoang-minh-khoa: org 'nowhere'"),
    (lambda d: d["organizations"][1].update(onDutyLead="ys-mai-thi-hoa"), "onDutyLead 'ys-mai-thi-hoa'"),
    (lambda d: d["organizations"][1].update(onDutyLeadEmail="truc lanh dao"), "onDutyLeadEmail 'truc lanh dao'"),
    (lambda d: d["organizations"][1].pop("onDutyLead") and d["organizations"][1].update(onDutyLeadEmail="a@b.vn"),
     "onDutyLeadEmail 'a@b.vn' is no e-mail address of an onDutyLead"),
    (lambda d: d["bank"].update(bin="97041"), "bank.bin"),
    (lambda d: d["bank"].update(account="1180-0098"), "bank.account"),
    (lambda d: d["bank"].update(facility="nowhere"), "bank.facility 'nowhere'"),
    (lambda d: d["goal"].update(facilities=0), "goal.facilities: above 0"),
    (lambda d: d["goal"].update(facilities="8"), "goal.facilities: a whole number"),
    (lambda d: d["goal"].update(beforeSen=1), "goal.beforeSen: give it or mark"),
    (lambda d: d["holidays"].append("2027-13-01"), "holidays: '2027-13-01'"),
    (lambda d: d.update(baseSalary=0), "baseSalary"),
    (lambda d: d.update(priceList="missing.json"), "priceList"),
    (lambda d: d["demoUsers"].update(admin={"name": "x"}), "demoUsers.admin: one of clinic, doctor"),
    (lambda d: d["demoUsers"]["clinic"].update(facility="tyt-my-hiep"), "demoUsers.clinic.facility 'tyt-my-hiep'"),
    (lambda d: d["demoUsers"]["doctor"].update(practitioner="bs-x"), "demoUsers.doctor.practitioner 'bs-x'"),
])
def test_a_file_sen_cannot_run_with_is_refused_naming_the_file_and_the_field(tmp_path: Path, change, said) -> None:
    data = _data()
    data["priceList"] = str(SECOND.parent / data["priceList"])
    change(data)
    path = tmp_path / "p.json"
    path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    with pytest.raises(province.ProvinceError) as err:
        province.load(path)
    assert str(err.value).startswith(f"province file {path}: ") and said in str(err.value), str(err.value)
    assert province.main(["check", str(path)]) == 1


def test_the_demo_on_duty_lead_has_an_address_the_late_consults_message_goes_to() -> None:
    """The demo's lead, with the e-mail the teleconsult worker's message is written to (make run's file sender);
    a lead without one keeps the bare reference (the address book names it)."""
    demo = province.settings(province.load(LOCAL / "demo-province.json"))
    assert json.loads(demo["SEN_ON_DUTY_LEADS"]) == {"bvdk-dong-thap": {
        "lead": "Practitioner/bs-nguyen-van-an", "email": "truc.lanhdao@bvdk-dong-thap.example"}}
    assert json.loads(province.settings(province.load(SECOND))["SEN_ON_DUTY_LEADS"]) == {
        "bvdk-bac-sen": "Practitioner/bs-hoang-minh-khoa"}


def test_the_goal_is_every_facility_unless_given_and_a_baseline_may_be_a_number() -> None:
    data = province.load(SECOND)
    without = copy.deepcopy(data)
    without["goal"] = {}
    assert province.settings(without)["SEN_REPORT_FACILITY_GOAL"] == "8"  # the organizations with a level
    counted = copy.deepcopy(without)
    for o in counted["organizations"]:
        o.pop("teleconsultBeforeSen", None)
    counted["goal"] = {"beforeSen": 2}
    province.check(counted)
    s = province.settings(counted)
    assert s["SEN_REPORT_FACILITY_BASELINE"] == "2" and "SEN_REPORT_BASELINE_FACILITIES" not in s
    # the environment's baseline, as a list or as a number, leaves the file's other form out
    assert "SEN_REPORT_FACILITY_BASELINE" not in province.unset(s, {"SEN_REPORT_BASELINE_FACILITIES": '["x"]'})
    named = province.settings(data)
    assert "SEN_REPORT_BASELINE_FACILITIES" not in province.unset(named, {"SEN_REPORT_FACILITY_BASELINE": "22"})


def test_dotenv_lines_are_the_settings_as_config_env_takes_them(capsys, monkeypatch) -> None:
    for name in province.settings(province.load(SECOND)):
        monkeypatch.delenv(name, raising=False)
    assert province.main(["dotenv", str(SECOND)]) == 0
    lines = dict(line.split("=", 1) for line in capsys.readouterr().out.splitlines())
    assert lines["SEN_BANK_ACCOUNT_NAME"] == "SO Y TE BAC SEN THU NGHIEM"
    assert json.loads(lines["SEN_FACILITY_DISTRICTS"])["tyt-phu-loc"] == "Huyện Phú Mỹ"


def test_the_seed_writes_the_provinces_own_name_in_every_address() -> None:
    seed = _seed()
    bundle = seed.province_bundle(province.load(SECOND))
    states = {a["state"] for e in bundle["entry"] for a in e["resource"].get("address", [])}
    assert states == {"Bắc Sen"}
    schedules = seed.teleconsult_bundle(province.load(SECOND))
    assert {e["resource"]["actor"][0]["reference"] for e in schedules["entry"]} >= {
        "Practitioner/bs-hoang-minh-khoa", "Practitioner/bs-dinh-thi-thu", "Practitioner/bs-ly-van-son"}
    assert len(schedules["entry"]) == 3
