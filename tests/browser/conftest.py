"""The browser suite: headless Chromium (Debian's ``chromium``, driven by Playwright's Python
package through the system browser; nothing is downloaded) against every service started once
for the whole suite as ``make run`` starts them (gunicorn + workers), seeded with the demo province.

axe-core, served by the portal itself, runs on every page a test checks (:meth:`Visitor.check`), with the page's
weight over the wire. Screenshots land in ``tests/browser/artifacts/`` (git-ignored): every tab's, full page, when
a test fails; every checked page's too only with ``SEN_BROWSER_SHOTS=1`` (a picture nobody looked at cost 0.3-0.45 s
a check, some 6 % of the suite; the README's pictures in docs/screenshots are taken by hand).

``SEN_BROWSER_STACK="ehr=URL teleconsult=URL billing=URL portal=URL"`` reuses a running stack
(``python tests/browser/stack.py`` prints one) instead of starting one.
"""

from __future__ import annotations

import os
import re
import shutil
import ssl
from pathlib import Path

import pytest

from tests.browser.stack import running_stack

CHROMIUM = os.environ.get("SEN_CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
# Chromium keeps only the last --disable-features it is given, and Playwright gives its own before ours: ours repeats
# Playwright's list (its chromiumSwitches.ts, the version constraints.txt pins) and adds what the suite turns off
PLAYWRIGHT_DISABLED = ("AvoidUnnecessaryBeforeUnloadCheckSync", "DestroyProfileOnBrowserClose", "HttpsUpgrades",
                       "HttpsFirstBalancedModeAutoEnable", "LensOverlay", "MediaRouter", "PaintHolding",
                       "ThirdPartyStoragePartitioning", "AvoidCorsURLLoaderRestartOnRedirect",
                       "TcpPortRandomizationWin", "OptimizationHints", "NetworkTimeServiceQuerying", "AimEnabled",
                       "PreconnectToSearch", "msForceBrowserSignIn", "msEdgeUpdateLaunchServicesPreferredVersion")
# the address bar's suggestion popup, a WebUI page (chrome://omnibox-popup.top-chrome/, and its AI-mode twin) that
# headless Chromium preloads in a renderer of its own for every window, so every new context, and that works again at
# each navigation: 1.5 s of Chromium's CPU a visitor of 2.9 measured (a sign-in, two pages and their axe checks). A
# headless test never opens it; Puppeteer turns the two off by default too
DISABLED = (*PLAYWRIGHT_DISABLED, "WebUIOmniboxPopup", "WebUIOmniboxAimPopup")
ARGS = ["--no-sandbox", "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--no-first-run", "--disable-dev-shm-usage", "--disable-gpu", "--disable-features=" + ",".join(DISABLED)]
BANK = {"SEN_BANK_BIN": "970436", "SEN_BANK_ACCOUNT": "0011001932418",
        "SEN_BANK_ACCOUNT_NAME": "BENH VIEN DA KHOA DONG THAP",  # a demo account for the QR codes
        # the demo cashier's facility owns it: its unmatched transfers are in that cashier's queue
        "SEN_BANK_ACCOUNT_FACILITIES": '{"0011001932418": "tyt-my-hiep"}'}
SHOTS = os.environ.get("SEN_BROWSER_SHOTS") == "1"  # every checked page's screenshot (a failed test's always)
# Counts the page's XMLHttpRequests and fetches in flight and when the last one ended, for Visitor.settle(): put in
# every document of a tab before the page's own scripts (htmx sends its "load" asks before the load event)
QUIET_JS = """(() => {
  const now = performance.now.bind(performance);  // the real clock, not one a test's page.clock installs
  let busy = 0, last = now();
  const done = () => { busy -= 1; last = now(); };
  const send = XMLHttpRequest.prototype.send;
  XMLHttpRequest.prototype.send = function (...args) {
    busy += 1; this.addEventListener("loadend", done, {once: true}); return send.apply(this, args); };
  const fetch = window.fetch;
  window.fetch = function (...args) { busy += 1; return fetch.apply(this, args).finally(done); };
  Object.defineProperty(window, "__senQuiet", {value: (ms) => document.readyState === "complete" && busy === 0
    && now() - last >= ms && [...document.images].every((i) => i.complete)});
})();"""
QUIET_MS = 150  # quiet this long: no ask in flight (htmx swaps an answer within 20 ms of it, then asks its "load"s)
WAIT_MS = 45_000  # the longest a tab waits for what it expects (a busy, shared machine)
SEPAY_KEY = "browser-suite-sepay-key"  # the test run's own webhook key (billing reads SEN_SEPAY_API_KEY)
pytestmark = pytest.mark.integration


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/browser" in str(item.fspath):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def stack(base_env, run_id, tmp_path_factory, mongo_client):
    given = os.environ.get("SEN_BROWSER_STACK")
    if given:
        yield {**dict(part.split("=", 1) for part in given.split()),
               "key": os.environ.get("SEN_DEV_JWT_KEY", ".sen/dev-jwt.pem"),
               "sepay": os.environ.get("SEN_SEPAY_API_KEY", "")}
        return
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install -y chromium chromium-driver")
    env = {**base_env, "LOG_LEVEL": "INFO", "SEN_SEPAY_API_KEY": SEPAY_KEY, **BANK}
    prefix = f"sen_t{run_id}_br"
    try:
        with running_stack(env, tmp_path_factory.mktemp("browser-logs"), prefix) as urls:
            yield {**urls, "key": base_env["SEN_DEV_JWT_KEY"], "sepay": SEPAY_KEY}
    finally:
        for svc in ("ehr", "teleconsult", "billing", "portal"):
            mongo_client.drop_database(f"{prefix}_{svc}")


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


@pytest.fixture(scope="session")
def browser():
    from playwright.sync_api import expect, sync_playwright

    # expect() retries until the page shows what it asks for; as long as a tab's own waits (the
    # context's default below), not Playwright's 5 s: the machine may be shared and busy
    expect.set_options(timeout=WAIT_MS)
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        yield b
        b.close()


# one TLS context for every sign-in's HTTP client: httpx makes one per client otherwise (40 ms of CPU, loading the CA
# file), for a client that only speaks plain HTTP to the loopback stack
_TLS = ssl.create_default_context()


class Visitor:
    """A browser tab signed in (or not) as one user, at one width, in one language."""

    def __init__(self, page, base: str, shots: Path, tag: str) -> None:
        self.page, self.base, self.shots, self.tag = page, base, shots, tag
        self.visited: list[str] = []

    def go(self, path: str):
        """Open ``path`` and wait for its first htmx asks too (the invoice's status box asks at load): no one
        element says every page is done with them, so the page going quiet does (:meth:`settle`; no page holds a
        request open: the polls are every 2 s or longer). After a click, a test waits for what the click brings.
        The main document's response."""
        response = self.page.goto(self.base + path)
        self.settle()
        return response

    def settle(self) -> None:
        """Wait until the page is loaded, its images too, and no XMLHttpRequest or fetch has been in flight for
        150 ms. What Playwright's ``networkidle`` waited for, without its fixed 500 ms of quiet after every load
        (0.53 s a wait measured, this 0.11 s; some 480 page loads a run). An image still loading keeps the page
        unsettled as it kept the network busy."""
        self.page.wait_for_function(f"() => window.__senQuiet && window.__senQuiet({QUIET_MS})", polling=50)

    def submit(self, selector: str) -> None:
        """Click a button that posts its form as a page (not in place) and wait for the page it brings.
        Not :meth:`settle` alone: the page before the answer is quiet too, so a test read it (or went on to
        another address, cutting the post off) when the answer was slow."""
        with self.page.expect_navigation():
            self.page.click(selector)
        self.settle()  # the new page's own first asks, as go()

    def sign_in(self, username: str, password: str | None = None, to: str | None = None) -> None:
        """Signed in as the demo ``username`` (password ``sen-<username>``), the tab on the page the sign-in sends
        to: the role's home, or ``to`` (a path), sent as the form's ``next`` as a page that asked for a sign-in
        sends it, for a test whose first page is not the home (the home's load, 0.5-1 s, was a page no one read).
        The sign-in form is posted by HTTP beside the browser, with the tab's cookies (a language chosen before
        is kept), and the session cookie it answers is put in the tab's: the tab's own walk through the form cost
        a page load more a sign-in (0.8 s of 3.5 measured), over a hundred a run. The form in the browser is
        tested by test_last_forms_slow_link and test_pages. A ``password`` given: typed into the tab's own form
        (refused: the sign-in page again)."""
        if password is not None:
            assert to is None, "the form typed in the tab goes to the role's home"
            self.go("/login")
            self.page.fill("#username", username)
            self.page.fill("#password", password)
            self.submit("form button.primary")  # signed in: the home page; refused: the sign-in page again
            return
        import httpx

        from tests.support import csrf_token

        ctx = self.page.context
        had = {c["name"]: c["value"] for c in ctx.cookies(self.base)}
        with httpx.Client(base_url=self.base, cookies=had, timeout=WAIT_MS / 1000, verify=_TLS,
                          headers={"Accept-Language": "vi-VN,vi"}) as http:
            token = csrf_token(http.get("/login").text)
            form = {"username": username, "password": f"sen-{username}", "csrf_token": token}
            r = http.post("/login", data={**form, "next": to} if to else form)
            assert r.status_code in (302, 303), f"signing in as {username}: {r.status_code} {r.text[:300]}"
            assert to is None or r.headers["location"].removeprefix(self.base) == to, r.headers["location"]
            ctx.add_cookies([{"name": c.name, "value": c.value, "url": self.base, "httpOnly": True, "sameSite": "Lax"}
                             for c in http.cookies.jar])
        self.go(r.headers["location"].removeprefix(self.base))

    def sign_out(self) -> None:
        self.submit("header form[action='/logout'] button")

    def english(self) -> None:
        self.submit("header button[value='en']")

    def shot(self, name: str, full_page: bool = True) -> None:
        """The page's picture, ``artifacts/<name>.png``, with ``SEN_BROWSER_SHOTS=1`` (for a look by hand)."""
        if SHOTS:
            self.page.screenshot(path=str(self.shots / f"{name}.png"), full_page=full_page)

    def check(self, name: str) -> None:
        """Run axe-core on the page (no serious or critical violation), no traceback in it, its weight over the
        wire under 200 KB; its screenshot with ``SEN_BROWSER_SHOTS=1``."""
        self.settle()  # the page done with its asks (see go())
        self.shot(re.sub(r"[^a-z0-9]+", "-", f"{self.tag}-{name}".lower()).strip("-"))
        if not self.page.evaluate("() => typeof axe === 'object'"):  # once a document: a page checked again in place
            self.page.add_script_tag(url=self.base + "/assets/vendor/axe.min.js")
        result = self.page.evaluate(
            "async () => { const r = await axe.run(document, {resultTypes: ['violations']});"
            " return r.violations.map(v => ({id: v.id, impact: v.impact, help: v.help,"
            " nodes: v.nodes.slice(0, 3).map(n => n.target.join(' '))})); }")
        bad = [v for v in result if v["impact"] in ("serious", "critical")]
        assert not bad, f"axe-core on {name}: {bad}"
        body = self.page.content()
        assert "Traceback" not in body
        # what the page cost over the wire (issue 16: under 200 KB on a slow link); axe is the test's
        weight = self.page.evaluate(
            "() => performance.getEntriesByType('navigation').concat(performance.getEntriesByType('resource'))"
            ".filter(e => !e.name.includes('axe.min.js')).reduce((n, e) => n + (e.encodedBodySize || 0), 0)")
        assert weight < 200_000, f"{name} weighs {weight} bytes"
        self.visited.append(name)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    if call.when == "call":
        item.browser_failed = outcome.get_result().failed


@pytest.fixture()
def visitor_factory(request, browser, stack, artifacts):
    contexts = []

    def make(tag: str, width: int = 1280, height: int = 900) -> Visitor:
        ctx = browser.new_context(viewport={"width": width, "height": height}, locale="vi-VN",
                                  timezone_id="Asia/Ho_Chi_Minh")
        ctx.set_default_timeout(WAIT_MS)  # the machine may be shared and busy
        ctx.add_init_script(QUIET_JS)  # for Visitor.settle()
        contexts.append(ctx)
        return Visitor(ctx.new_page(), stack["portal"], artifacts, tag)

    yield make
    if getattr(request.node, "browser_failed", False):  # what each tab showed when the test failed
        slug = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")
        for i, page in enumerate(p for ctx in contexts for p in ctx.pages):
            try:
                page.screenshot(path=str(artifacts / f"failed-{slug}-{i}.png"), full_page=True, timeout=10_000)
                text = page.inner_text("body", timeout=5_000)
                (artifacts / f"failed-{slug}-{i}.txt").write_text(f"{page.url}\n\n{text}")
            except Exception:  # noqa: BLE001 - a closed or hung tab: the others still
                pass
    for ctx in contexts:
        ctx.close()


def pytest_sessionfinish(session, exitstatus) -> None:
    # keep only this run's screenshots next to each other; an empty folder is removed
    if ARTIFACTS.exists() and not any(ARTIFACTS.iterdir()):
        shutil.rmtree(ARTIFACTS, ignore_errors=True)
