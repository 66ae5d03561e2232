"""deploy/local/run.sh (`make run`): the banner names the ports the services were started on.

The script's own lines are run by bash: the ``ports`` array (from ``SEN_*_PORT``), the URLs the
services call each other by, and the banner printed once everything is ready. Nothing is started.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

RUN_SH = Path(__file__).resolve().parents[2] / "deploy" / "local" / "run.sh"
MOVED = {"SEN_PORTAL_PORT": "18180", "SEN_EHR_PORT": "18181", "SEN_TELECONSULT_PORT": "18182",
         "SEN_BILLING_PORT": "18183"}


def banner(env: dict[str, str]) -> str:
    """run.sh's banner as it prints it with ``env``, from its ``ports`` and URL lines."""
    text = RUN_SH.read_text()
    start = text.index("declare -A ports=")
    setup = text[start:text.index("# the province Sen serves", start)]
    heredoc = re.search(r"^cat <<TXT\n.*?^TXT\n", text, re.S | re.M)
    assert heredoc, "run.sh prints its banner with cat <<TXT"
    script = f'state=/tmp/sen-state\n{setup}\n{heredoc.group(0)}\nprintf "%s\\n" "$SEN_EHR_URL" "$SEN_BILLING_URL"\n'
    return subprocess.run(["bash", "-euo", "pipefail", "-c", script], env={"PATH": "/usr/bin:/bin", **env},
                          capture_output=True, text=True, check=True, timeout=30).stdout


@pytest.mark.parametrize("env", [{}, MOVED], ids=["defaults", "moved"])
def test_the_banner_prints_the_ports_the_services_use(env: dict[str, str]) -> None:
    out = banner(env)
    port = {svc: env.get(f"SEN_{svc.upper()}_PORT", default)
            for svc, default in (("portal", "8080"), ("ehr", "8081"), ("teleconsult", "8082"), ("billing", "8083"))}
    assert f"portal       http://127.0.0.1:{port['portal']}/ " in out
    # each a URL that answers when opened (a service's / and /fhir do not: 404, 405)
    for svc in ("ehr", "teleconsult", "billing"):
        assert re.search(rf"^  {svc} +http://127\.0\.0\.1:{port[svc]}/fhir/metadata ", out, re.M), svc
    assert f"devwebhook --url http://127.0.0.1:{port['billing']} " in out
    # the URLs the services call each other by follow the ports too
    assert out.splitlines()[-2:] == [f"http://127.0.0.1:{port['ehr']}", f"http://127.0.0.1:{port['billing']}"]
    if env:
        assert not re.search(r":808[0-3]\b", out), out


def test_the_ports_started_and_waited_for_are_the_array_the_banner_reads() -> None:
    text = RUN_SH.read_text()
    assert 'PORT=${ports[$svc]}' in text and 'url="http://127.0.0.1:${ports[$svc]}/readyz"' in text
    assert not re.search(r"127\.0\.0\.1:808[0-3]", text), "a fixed port left in run.sh"


def run_environment(env: dict[str, str]) -> dict[str, str]:
    """The SEN_* variables run.sh exports for the services, as bash computes them from its own lines
    (from the ``ports`` array to the first process started) with ``env`` set; nothing is started."""
    text = RUN_SH.read_text()
    start = text.index("declare -A ports=")
    setup = text[start:text.index("\npids=()", start)]
    root = RUN_SH.parents[2]
    script = f'cd {root}\npy={root}/.venv/bin/python\nstate=/tmp/sen-state\n{setup}\nenv -0\n'
    out = subprocess.run(["bash", "-euo", "pipefail", "-c", script], env={"PATH": "/usr/bin:/bin", **env},
                         capture_output=True, text=True, check=True, timeout=60).stdout
    return dict(item.split("=", 1) for item in out.split("\0") if item.startswith("SEN_"))


def test_every_demo_facility_has_the_level_its_price_is_charged_at() -> None:
    """Each facility of the demo province gets its level from ``make run`` (a commune station charged at the
    default district level's price was the fault: 250.000 ₫ instead of 100.000 ₫ for Trạm Y tế xã Đốc Binh Kiều)."""
    demo = json.loads((RUN_SH.parent / "demo-province.json").read_text(encoding="utf-8"))
    facilities = {o["id"]: o for o in demo["organizations"] if o["type"] == "prov"}
    levels = json.loads(run_environment({})["SEN_FACILITY_LEVELS"])
    assert set(levels) == set(facilities)
    assert set(levels.values()) <= {"central", "province", "district", "commune"}
    for fid, org in facilities.items():
        if org["name"].startswith("Trạm Y tế xã"):
            assert levels[fid] == "commune", fid
        if org["name"].startswith("Trung tâm Y tế huyện"):
            assert levels[fid] == "district", fid
    assert levels["tyt-doc-binh-kieu"] == "commune"
    # a level given to make run wins over the demo's
    assert json.loads(run_environment({"SEN_FACILITY_LEVELS": '{"x": "central"}'})["SEN_FACILITY_LEVELS"]) == {
        "x": "central"}


def test_make_run_names_the_demo_facilities_that_used_teleconsultation_before_sen(monkeypatch) -> None:
    """Review 12: ``make run`` set no SEN_REPORT_BASELINE_FACILITIES, so the demo dashboard said a facility of the
    baseline was counted twice. It names those of the demo province marked ``teleconsultBeforeSen`` (its
    provincial hospital and district health centres): facilities the demo has, and the portal takes the list
    (the baseline is then how many it names). A baseline given as a number only is left alone (the portal
    refuses a number and a list that disagree)."""
    from sen_portal.config import PortalSettings

    demo = json.loads((RUN_SH.parent / "demo-province.json").read_text(encoding="utf-8"))
    facilities = {o["id"]: o for o in demo["organizations"] if o["type"] == "prov"}
    named = json.loads(run_environment({})["SEN_REPORT_BASELINE_FACILITIES"])
    marked = [o["id"] for o in demo["organizations"] if o.get("teleconsultBeforeSen")]
    assert named == marked and len(set(named)) == len(named) == 3
    assert set(named) <= set(facilities)
    assert {facilities[f]["level"] for f in named} == {"province", "district"}
    monkeypatch.setenv("SEN_REPORT_BASELINE_FACILITIES", json.dumps(named))
    settings = PortalSettings(SEN_DEV_JWT_KEY="dev-jwt.pem")
    assert settings.report_facility_baseline == 3
    assert settings.report_targets().baseline_facilities == frozenset(named)
    # the operator's own list, or a number alone, wins
    given = run_environment({"SEN_REPORT_BASELINE_FACILITIES": '["x"]'})
    assert given["SEN_REPORT_BASELINE_FACILITIES"] == '["x"]'
    assert "SEN_REPORT_BASELINE_FACILITIES" not in run_environment({"SEN_REPORT_FACILITY_BASELINE": "22"})


# A stand-in for gunicorn and the workers: both exit 0 on SIGINT and SIGTERM, handlers of their own (so a
# Ctrl-C reaches them even when the script ignores SIGINT); it says it is up by creating its file.
FAKE_PROCESS = """import pathlib, signal, sys, time
for sig in (signal.SIGINT, signal.SIGTERM):
    signal.signal(sig, lambda *_: sys.exit(0))
pathlib.Path(sys.argv[1]).touch()
if sys.argv[2] != "forever":
    sys.exit(int(sys.argv[2]))
while True:
    time.sleep(60)
"""


def supervised(tmp_path: Path, *, ignore_sigint: bool = False, crash: int | None = None) -> subprocess.Popen:
    """run.sh's process handling (``started``, ``stop``, its traps and ``supervise``, its own lines) over three
    fake processes started as run.sh starts Sen's, in a session of its own; returns once all three are up
    (the one of ``crash`` exits with that status). ``ignore_sigint``: the script is started ignoring SIGINT,
    as a script started in the background is, so a Ctrl-C reaches its processes only."""
    import signal

    text = RUN_SH.read_text()
    start = text.index("\npids=()")
    handling = text[start:text.index('\n"$py" -m sen_shared.devtoken', start)]
    assert text.rstrip().endswith("\nsupervise"), "run.sh ends by supervising what it started"
    fake = tmp_path / "fake.py"
    fake.write_text(FAKE_PROCESS)
    starts = "".join(
        f'python3 {fake} {tmp_path}/up-{i} {crash if crash is not None and i == 2 else "forever"} '
        f'>>"$state/log/{name}.log" 2>&1 &\nstarted "{name.replace("-", " ")}" "$state/log/{name}.log"\n'
        for i, name in enumerate(("ehr-web", "ehr-worker", "billing-web")))
    script = f"state={tmp_path}\nmkdir -p $state/log\nstarted_infra=0\n{handling}\n{starts}supervise\n"

    def before() -> None:
        if ignore_sigint:
            signal.signal(signal.SIGINT, signal.SIG_IGN)

    proc = subprocess.Popen(["bash", "-euo", "pipefail", "-c", script], env={"PATH": "/usr/bin:/bin"},
                            stderr=subprocess.PIPE, text=True, start_new_session=True, preexec_fn=before)
    while len(list(tmp_path.glob("up-*"))) < 3 and proc.poll() is None:
        subprocess.run(["sleep", "0.05"], check=True)
    return proc


@pytest.mark.parametrize("ignore_sigint", [False, True], ids=["foreground", "sigint-ignored"])
@pytest.mark.parametrize("signal_name", ["SIGINT", "SIGTERM"])
def test_ctrl_c_stops_sen_as_asked_not_as_a_crash(tmp_path: Path, signal_name: str, ignore_sigint: bool) -> None:
    """A newcomer's Ctrl-C on ``make run`` read 'a Sen process exited; stopping the rest': when the script
    ignored SIGINT (started in the background), the processes stopped on the group's Ctrl-C and the script
    took it for a crash. A stop asked for (Ctrl-C, or kill -- -<pgid>) is said to be one, and ends with 0."""
    import os
    import signal

    proc = supervised(tmp_path, ignore_sigint=ignore_sigint)
    os.killpg(proc.pid, getattr(signal, signal_name))
    _, err = proc.communicate(timeout=30)
    assert "as asked" in err and "exited with status" not in err and "a Sen process exited" not in err, err
    assert proc.returncode == 0, err


def test_a_term_to_the_script_alone_stops_every_process(tmp_path: Path) -> None:
    import os
    import signal

    proc = supervised(tmp_path)
    os.kill(proc.pid, signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert err == "stopping Sen, as asked…\n" and proc.returncode == 0
    assert not subprocess.run(["pgrep", "-s", str(proc.pid)], capture_output=True).stdout  # none left


@pytest.mark.parametrize("status", [1, 3, 137])
def test_a_process_that_dies_is_named_with_its_log_and_make_run_fails(tmp_path: Path, status: int) -> None:
    proc = supervised(tmp_path, crash=status)
    _, err = proc.communicate(timeout=30)
    assert err == (f"billing web exited with status {status}: stopping the rest of Sen "
                   f"(see {tmp_path}/log/billing-web.log)\n"), err
    assert proc.returncode == 1
    assert not subprocess.run(["pgrep", "-s", str(proc.pid)], capture_output=True).stdout


@pytest.mark.parametrize("env", [{}, MOVED], ids=["defaults", "moved"])
def test_the_portal_address_the_api_services_point_to_follows_its_port(env: dict[str, str]) -> None:
    """An API service's 404 at / names the portal (SEN_PORTAL_URL) for people who opened it in a browser."""
    assert run_environment(env)["SEN_PORTAL_URL"] == f"http://127.0.0.1:{env.get('SEN_PORTAL_PORT', '8080')}/"


SECOND = RUN_SH.parents[2] / "tests" / "e2e" / "provinces" / "bac-sen.json"


def test_the_province_file_is_chosen_by_a_setting_and_decides_every_province_setting() -> None:
    """``SEN_PROVINCE=<file> make run``: a second province (the invented Bắc Sen) gets its own hub and on-duty lead,
    bank account, base salary, price list, holidays, goal, baseline, residents, facilities and demo users; the demo's
    file is the default, and the file is exported for seed.py, which seeds it."""
    demo = run_environment({})
    assert demo["SEN_PROVINCE"] == str(RUN_SH.parent / "demo-province.json")
    assert (demo["SEN_CONSULT_DEFAULT_HUB"], demo["SEN_PORTAL_HUB"]) == ("bvdk-dong-thap", "bvdk-dong-thap")
    assert (demo["SEN_BANK_BIN"], demo["SEN_BANK_ACCOUNT"], demo["SEN_REPORT_FACILITY_GOAL"]) == (
        "970436", "0011001234567", "165")
    second = run_environment({"SEN_PROVINCE": str(SECOND)})
    assert second["SEN_PROVINCE"] == str(SECOND)
    assert (second["SEN_CONSULT_DEFAULT_HUB"], second["SEN_PORTAL_HUB"]) == ("bvdk-bac-sen", "bvdk-bac-sen")
    assert json.loads(second["SEN_ON_DUTY_LEADS"]) == {"bvdk-bac-sen": "Practitioner/bs-hoang-minh-khoa"}
    assert (second["SEN_BANK_BIN"], second["SEN_BANK_ACCOUNT"], second["SEN_BANK_ACCOUNT_NAME"]) == (
        "970415", "1180009876543", "SO Y TE BAC SEN THU NGHIEM")
    assert json.loads(second["SEN_BANK_ACCOUNT_FACILITIES"]) == {"1180009876543": "tyt-an-binh"}
    assert second["SEN_BASE_SALARY"] == "2530000"
    assert second["SEN_PRICE_LIST_FILE"] == str(SECOND.parent / "bac-sen-prices.json")
    assert second["SEN_TELECONSULT_HOLIDAYS"].startswith("2027-01-01,2027-02-05,")
    assert (second["SEN_REPORT_FACILITY_GOAL"], second["SEN_REPORT_POPULATION"]) == ("8", "12")
    assert json.loads(second["SEN_REPORT_BASELINE_FACILITIES"]) == ["bvdk-bac-sen"]
    assert json.loads(second["SEN_FACILITY_NAMES"])["tyt-an-binh"] == "Trạm Y tế xã An Bình"
    assert len(json.loads(second["SEN_FACILITY_LEVELS"])) == 8
    assert json.loads(second["SEN_PORTAL_DEMO_USERS"])["clinic"] == {
        "name": "Mai Thị Hoa", "facility": "tyt-an-binh", "practitioner": "ys-mai-thi-hoa"}
    assert "SEN_PORTAL_DEMO_USERS" not in demo  # the demo's own users are the portal's defaults
    # nothing of the demo's left in what the second province runs with
    demo_values = {v for k, v in demo.items() if k != "SEN_PROVINCE" and k in second}
    for name, value in second.items():
        if name.startswith(("SEN_PROVINCE", "SEN_EHR_", "SEN_TELECONSULT_URL", "SEN_BILLING_", "SEN_PORTAL_URL",
                            "SEN_ENV", "SEN_DEV_JWT_KEY")):
            continue
        assert value not in demo_values and "dong-thap" not in value and "my-hiep" not in value, name
    # an operator's own value still wins over the file's
    assert run_environment({"SEN_PROVINCE": str(SECOND), "SEN_BANK_ACCOUNT": "42"})["SEN_BANK_ACCOUNT"] == "42"


def test_a_province_file_make_run_cannot_use_stops_it_naming_the_file_and_the_field(tmp_path: Path) -> None:
    bad = json.loads(SECOND.read_text(encoding="utf-8"))
    bad["bank"]["bin"] = "97041"
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(bad), encoding="utf-8")
    with pytest.raises(subprocess.CalledProcessError) as failed:
        run_environment({"SEN_PROVINCE": str(path)})
    assert f"province file {path}: bank.bin" in failed.value.stderr
