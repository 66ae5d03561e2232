"""The portal's pages: server-rendered Flask (Jinja), htmx where it helps, Vietnamese by default.

Pages are a Flask blueprint registered on connexion's public ``FlaskApp.app``: they are HTML
with forms, cookie sessions and CSRF tokens, not an API, so they are not in the OpenAPI spec
(which keeps the JSON endpoints). ``init_web`` wires sessions (signed cookie, expiring),
Flask-Babel (vi default, en one click away, Asia/Ho_Chi_Minh), Flask-WTF's CSRF check on every
POST of a page, the front-end packages served from the portal itself, and the page routes.
"""

from __future__ import annotations

import hashlib
import mimetypes
import time
from collections.abc import Mapping
from datetime import timedelta
from functools import cache, wraps
from pathlib import Path
from typing import Any, NamedTuple

from flask import (
    Blueprint,
    Flask,
    Response,
    abort,
    current_app,
    g,
    has_request_context,
    redirect,
    render_template,
    request,
    session,
    template_rendered,
    url_for,
)
from flask.sessions import SecureCookieSessionInterface
from flask_babel import Babel, format_decimal, get_locale, get_translations, gettext, lazy_gettext
from flask_compress import Compress
from flask_wtf.csrf import CSRFError, CSRFProtect, generate_csrf
from itsdangerous import BadSignature
from jinja2 import pass_context
from pymongo.errors import PyMongoError

from .. import caches
from ..config import PortalSettings
from ..domain.report_facts import one_decimal
from . import directory, formatting, icd10, results
from .backend import BackendError, outage_status
from .patients import FHIR_ID
from .users import User, named_by_role, shown_name

HERE = Path(__file__).resolve().parent
LANGUAGES = ("vi", "en")
bp = Blueprint("web", __name__, template_folder="templates")
STATIC = HERE / "static"
csrf = CSRFProtect()

# the npm packages' files a page may load: /assets/vendor/<name> (installed by `make assets`)
VENDOR = {
    "htmx.min.js": "htmx.org/dist/htmx.min.js",
    "chart.umd.min.js": "chart.js/dist/chart.umd.min.js",
    "axe.min.js": "axe-core/axe.min.js",
}
# the files served, by path: (mtime, size) as read, the bytes, a hash of the bytes (the URL's ?v=)
_assets: dict[Path, tuple[tuple[int, int], bytes, str]] = {}
_static_paths: dict[str, Path] = {}  # a static file's name -> its resolved path (the name's file checked each time)
ASSET_ENDPOINTS = frozenset({"web.static", "web.vendor"})
# a versioned asset's address changes with its bytes: a browser keeps it a year without asking again
IMMUTABLE = "public, max-age=31536000, immutable"


def current_user() -> User | None:
    data = session.get("user")
    return User.from_session(data) if data else None


def login_required(*roles: str):  # noqa: ANN201 - a decorator
    """The page needs a signed-in user holding one of ``roles`` (admin always may; none: any role)."""
    def wrap(fn):  # noqa: ANN001, ANN202
        @wraps(fn)
        def inner(*args: Any, **kwargs: Any) -> Any:
            user = current_user()
            if user is None:
                if is_htmx():  # a part of a page (a poll, a search): said on the page, which stays
                    return signed_out_page()
                # back to the page asked for, its query (a filter, an invoice to charge) included
                wanted = request.full_path if request.query_string else request.path
                return redirect(url_for("web.login", next=wanted))
            if roles and not user.can(*roles):
                return render_template("error.html", title=gettext("Not allowed"),
                                       message=gettext("Your role cannot open this page.")), 403
            g.user = user
            return fn(*args, **kwargs)
        inner.needs_sign_in = True  # a form of such a page sent signed out is said so (_csrf_error)
        return inner
    return wrap


def is_htmx() -> bool:
    """Whether this request is htmx's (a form sent in place, a search, a poll), not a page's."""
    return request.headers.get("HX-Request") == "true" and not request.headers.get("HX-History-Restore-Request")


def signed_out_page(typed: list[Typed] | None = None) -> Any:
    """The page saying the user was signed out (the session ended, the cookie was lost), with a link to
    sign in again that comes back to the page the user was on (a form's page; htmx's: the page it is
    part of), and what was typed (``typed``: a form not sent) to copy: 401."""
    came = _on_this_site(request.headers.get("HX-Current-URL") if is_htmx() else None) \
        or _on_this_site(request.referrer)
    page = came if came and _answers_get(came) else \
        (request.path if _answers_get(request.path) else nearest_page(request.path))
    # said in the page's problem box (htmx: a form sent in place, the page and what was typed staying): signing in
    # in the same tab would leave that page, the nurse's long question and its files with it; a new tab keeps it
    return render_template(
        "error.html", title=gettext("You were signed out"), typed=typed, new_tab=is_htmx(),
        message=gettext("Your session ended (signed out, or open too long), so nothing was sent. Sign in "
                        "again, then send it once more."),
        back=url_for("web.login", next=page or "/"), back_label=gettext("Sign in again")), 401


def select_locale() -> str:
    lang = session.get("lang")
    return lang if lang in LANGUAGES else "vi"


def _secret(settings: PortalSettings) -> str:
    if settings.secret_key:
        return settings.secret_key
    # development: every worker derives the same key from the development issuer's key file
    path = settings.dev_key_path
    material = path.read_bytes() if path and path.exists() else b"sen-portal-development"
    return hashlib.sha256(b"sen-portal-session\0" + material).hexdigest()


OLD_TOKEN_KEYS = frozenset({"access_token", "refresh_token"})  # what a session cookie held before web/tokens.py


class SessionInterface(SecureCookieSessionInterface):
    """Flask's signed-cookie session, whose unchanged cookie is sent again (its idle expiry,
    ``PERMANENT_SESSION_LIFETIME``, moved on) at most once every ``REFRESH_SECONDS``, not on every
    request: signing and sending the cookie was a tenth of the portal's CPU for the invoice status
    box, which htmx asks for every 2 s. The idle expiry is then exact to within that minute. A
    changed session is sent at once, as before. A cookie holding a token (:data:`OLD_TOKEN_KEYS`) opens no session.
    The cookie holds nothing secret: an OIDC sign-in's tokens are kept on the server (web/tokens.py)."""

    REFRESH_SECONDS = 60

    def open_session(self, app: Flask, request: Any) -> Any:
        signer = self.get_signing_serializer(app)
        if signer is None:
            return None
        value = request.cookies.get(self.get_cookie_name(app))
        if not value:
            return self.session_class()
        try:
            data, signed_at = signer.loads(value, max_age=int(app.permanent_session_lifetime.total_seconds()),
                                           return_timestamp=True)
        except BadSignature:
            return self.session_class()
        if isinstance(data, dict) and OLD_TOKEN_KEYS.intersection(data):
            # a cookie from before the tokens went to the server (web/tokens.py) holds a bearer token: a session
            # that ended (the user signs in again), sent back without it at once; the language kept
            kept = self.session_class({"lang": data["lang"]} if data.get("lang") else {})
            kept.modified = True
            return kept
        opened = self.session_class(data)
        opened.signed_at = signed_at.timestamp()  # when this cookie was made (its signature's time)
        return opened

    def should_set_cookie(self, app: Flask, session: Any) -> bool:
        if session.modified:
            return True
        if not (session.permanent and app.config["SESSION_REFRESH_EACH_REQUEST"]):
            return False
        signed_at = getattr(session, "signed_at", None)
        return signed_at is None or time.time() - signed_at >= self.REFRESH_SECONDS


def init_web(flask_app: Flask, settings: PortalSettings) -> None:
    flask_app.session_interface = SessionInterface()  # sen_shared turns cookies off for APIs
    flask_app.config.update(
        SECRET_KEY=_secret(settings),
        SESSION_COOKIE_NAME="sen_portal",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=settings.cookie_secure,
        PERMANENT_SESSION_LIFETIME=timedelta(minutes=settings.idle_minutes),
        SESSION_REFRESH_EACH_REQUEST=True,
        WTF_CSRF_CHECK_DEFAULT=False,  # checked for the pages' POSTs only (the JSON API uses bearer tokens)
        WTF_CSRF_TIME_LIMIT=settings.session_minutes * 60,
        BABEL_DEFAULT_LOCALE="vi",
        BABEL_DEFAULT_TIMEZONE="Asia/Ho_Chi_Minh",
        BABEL_TRANSLATION_DIRECTORIES=str(HERE.parent / "translations"),
        SEN_ASSETS=str(settings.assets_path()),
    )
    csrf.init_app(flask_app)
    compress(flask_app)
    Babel(flask_app, locale_selector=select_locale)
    install_template_gettext(flask_app)
    formatting.install(flask_app)
    directory.install(flask_app)
    icd10.install(flask_app)
    flask_app.jinja_env.filters["day_name"] = day_name
    # a global, not the context processor's: the attachments macro is imported without the page's context
    flask_app.jinja_env.globals["reference_display"] = results.reference_display
    from . import auth, cashier, charges, clinic, dashboard, doctor, minutes_print, prices  # noqa: F401 - they add their routes to bp

    auth.init_oidc(flask_app, settings)
    flask_app.register_blueprint(bp)
    flask_app.register_error_handler(405, method_not_allowed)  # routing's 405 reaches no blueprint's handler
    flask_app.register_error_handler(404, no_such_page)  # nor its 404
    template_rendered.connect(_error_page_rendered, flask_app)
    flask_app.before_request(_body_too_large)  # before the pages' CSRF check: the body is gone
    flask_app.before_request(_refused_address)
    flask_app.register_error_handler(413, body_too_large)


# a locale -> Flask-Babel's catalog of it; (a module's lazy label, a locale) -> the label in that language. Read
# from the installed catalogs (never stale), registered all the same: emptied, they are read again
_catalogs: dict[Any, Any] = caches.kept({})
_said: dict[tuple[int, Any], tuple[Any, str]] = caches.kept({})


def translations() -> Any:
    """The request's catalog: Flask-Babel's own (``get_translations``, loaded once a locale), for its locale
    (``get_locale``: a ``force_locale`` block's too), kept by locale: Flask-Babel looked the request's domain,
    locale and catalog up again for every string (~10 µs of a template ``_()``'s ~18; a page says 50 to 130)."""
    locale = get_locale()
    found = _catalogs.get(locale)
    if found is None:
        found = _catalogs[locale] = get_translations()
    return found


def said(label: Any) -> str:
    """A module's lazy label (``lazy_gettext``) in the request's language, translated once a process and locale:
    ``str(label)`` went through Flask-Babel's lookups each time (a worklist row's status and priority, each row)."""
    locale = get_locale()
    if locale is None:  # outside a request: as Flask-Babel says it
        return str(label)
    key = (id(label), locale)
    found = _said.get(key)
    if found is None or found[0] is not label:  # the entry holds its label: an id is never another's while kept
        found = _said[key] = (label, str(label))
    return found[1]


def install_template_gettext(flask_app: Flask) -> None:
    """The templates' ``_()``, ``ngettext`` and ``pgettext`` read the page's catalog (:func:`translations`) from
    the page's context, where :func:`_globals` puts it once a render (``sen_catalog``), else (a macro imported
    without the page's context) looked up as :func:`translations` does: Flask-Babel's own callables looked the
    request's domain, locale and catalog up again for every string, and the lookup of the locale alone (three
    reads of ``flask.g``) was most of a template ``_()``. The same catalogs, the same locale (a ``force_locale``
    block's: the context is made inside it), Jinja's new-style calls (escaped, ``%`` formatted) as before."""

    def catalog(ctx: Any) -> Any:
        return ctx.get("sen_catalog") or translations()

    flask_app.jinja_env.install_gettext_callables(
        gettext=pass_context(lambda ctx, s: catalog(ctx).ugettext(s)),
        ngettext=pass_context(lambda ctx, s, p, n: catalog(ctx).ungettext(s, p, n)),
        newstyle=True,
        pgettext=pass_context(lambda ctx, c, s: catalog(ctx).upgettext(c, s)),
        npgettext=pass_context(lambda ctx, c, s, p, n: catalog(ctx).unpgettext(c, s, p, n)))


def compress(flask_app: Flask) -> None:
    """Pages, htmx's parts and the assets (not the JSON API: :data:`PAGE_TYPES`) leave compressed when the
    browser accepts it (Flask-Compress, an ``after_request`` of the app: after the pages' own headers): brotli
    for browsers, gzip for other clients (``Vary: Accept-Encoding``); a consult page of 8 KB crosses a clinic's
    3G link as 2 KB. Brotli at 6: smaller than gzip at 9 on htmx and Chart.js, ~1 ms a page. Only 2xx answers
    over 500 bytes (Flask-Compress's rule). The pages hold a CSRF token beside what the user typed (BREACH's
    setting): the session cookie is SameSite=Lax,
    so no other site can have a signed-in browser fetch pages whose sizes it could measure."""
    flask_app.config.update(COMPRESS_ALGORITHM=["br", "gzip"], COMPRESS_BR_LEVEL=6, COMPRESS_LEVEL=6,
                            COMPRESS_MIMETYPES=PAGE_TYPES)
    Compress(flask_app)


# what leaves compressed: pages, htmx's parts, CSS, scripts, SVG. Not connexion's answers (the JSON API, /metrics'
# text): connexion validates an answer after Flask's after_request (SEN_ENV=test), and a compressed body failed
# it as "not valid UTF-8 text" (400) for every client that accepts gzip (httpx, curl --compressed); a report is
# a few KB, read by the province's systems, not over a clinic's link
PAGE_TYPES = ["text/html", "text/css", "text/javascript", "application/javascript", "image/svg+xml"]


def _body_too_large() -> None:
    """A page's POST whose body was over the portal's limit reaches the page without it (sen_shared's
    RequestMiddleware, ``pages``): answered by :func:`body_too_large`, before anything reads the form."""
    if request.headers.get("X-Sen-Body-Too-Large"):
        abort(413)


def _refused_address() -> Any:
    """A page's address the shared middleware refused (``X-Sen-Refused: path``: it held control characters,
    which the page's request comes without): :func:`bad_address`, before any page's work."""
    if request.headers.get("X-Sen-Refused") == "path":
        return bad_address()
    return None


def bad_address() -> Any:
    """An address no page has (control characters in it: a link copied with them, a hand-typed ``%00``): the
    portal's readable page in the user's language, 400; the JSON API's keep the middleware's problem."""
    return _headers(current_app.make_response((render_template(
        "error.html", title=gettext("This address is not valid"), message=gettext(
            "The address holds characters that no page's address has. Open the page from the menu or your "
            "home page.")), 400)))


# the parts of a page's address that name a record (a patient, task, consult, invoice, document, price): a FHIR
# id (FHIR R4 ``id``: 1 to 64 of A-Z a-z 0-9 - .), else the record cannot exist
ID_ARGS = frozenset({"pid", "tid", "cid", "iid", "did"})


@bp.url_value_preprocessor
def _no_such_id(endpoint: str | None, values: dict[str, Any] | None) -> None:
    """A page's address naming a record by what is no FHIR id (3,000 letters, ``Nguyễn``): a record that
    cannot exist, the same 404 "Not found" as an id no record has (``bn-9999``), nothing asked of a
    back-end (the EHR refused it as malformed, a 400 "refused" page). Before any page's work."""
    if values and any(FHIR_ID.fullmatch(str(values[k])) is None for k in ID_ARGS.intersection(values)):
        abort(404)


def body_too_large(err: Any) -> Any:
    """A 413 of a page (a body over the portal's limit for one request, ``SEN_MAX_BODY_BYTES``): the
    portal's readable page in the user's language; the browser's Back button finds the form as it was
    typed (a page cannot keep the files). Files sent (the shared middleware's ``X-Sen-Body-Too-Large`` says
    ``files``): the files' limits, and an htmx request's 413 is said by app.js in the form's own box. None:
    the form's text is what is too large (a question of 300,000 letters), said so, and an htmx request's
    in the page's problem box (:func:`in_page`)."""
    from . import backend
    from .clinic import upload_limits

    if "files" in (request.headers.get("X-Sen-Body-Too-Large") or "").split():
        response = current_app.make_response((render_template(
            "error.html", title=gettext("The files are too large to send"), message=gettext(
                "Nothing was sent: the files together are larger than the portal takes at once. %(hint)s Go back "
                "with the browser's Back button (what you typed is still there), then remove a file or choose "
                "smaller ones.", hint=upload_limits()["hint"])), 413))
    else:
        response = current_app.make_response((render_template(
            "error.html", title=gettext("The form is too large to send"), message=gettext(
                "Nothing was sent: what was typed in the form is longer than the portal takes at once (%(mb)s MB "
                "in all). Go back with the browser's Back button (what you typed is still there), shorten the "
                "text, then send it again.", mb=format_decimal(int(backend.settings().max_body_bytes / 100_000) / 10,
                                                               format="0.#"))), 413))
        if is_htmx():
            in_page(response, always=True)
    return _headers(response)


@bp.before_request
def _session_and_csrf() -> Any:
    if request.endpoint in ASSET_ENDPOINTS:
        return None  # not reading the session keeps 'Vary: Cookie' off the assets (a refreshed cookie would miss)
    user = session.get("user")
    if user:
        started = session.get("signed_in_at", 0)
        if time.time() - started > current_app.config["WTF_CSRF_TIME_LIMIT"]:
            session.clear()  # the sign-in is older than SEN_PORTAL_SESSION_MINUTES: sign in again
    if request.method == "POST":
        csrf.protect()
    return None


@bp.app_context_processor
def _globals() -> dict[str, Any]:
    from .dashboard import priority_label

    return {"user": current_user(), "lang": select_locale(), "sen_catalog": translations(), "LANGUAGES": LANGUAGES,
            "role_label": role_label,
            "priority_label": priority_label, "status_label": status_label, "minutes": minutes,
            "video_link": video_link, "day_name": day_name, "minutes_of": minutes_of,
            "outcome_label": outcome_label, "refunded_label": refunded_label,
            "payment_outcome": payment_outcome, "shown_name": shown_name,
            "named_by_role": named_by_role}


def minutes_of(task: dict[str, Any]) -> dict[str, Any] | None:
    """The signed minutes the teleconsult service attaches to the completed Task (JSON)."""
    import base64
    import json

    for out in task.get("output") or []:
        att = out.get("valueAttachment") or {}
        if att.get("contentType") == "application/json" and att.get("data"):
            try:
                data = json.loads(base64.b64decode(att["data"]))
            except ValueError:
                return None
            return data if isinstance(data, dict) else None
    return None


_DAYS = {"mon": lazy_gettext("Monday"), "tue": lazy_gettext("Tuesday"), "wed": lazy_gettext("Wednesday"),
         "thu": lazy_gettext("Thursday"), "fri": lazy_gettext("Friday"), "sat": lazy_gettext("Saturday"),
         "sun": lazy_gettext("Sunday")}


def day_name(code: str) -> str:
    label = _DAYS.get(code)
    return said(label) if label is not None else code


_STATUS = {"requested": lazy_gettext("Waiting for the hub"), "received": lazy_gettext("Received"),
           "accepted": lazy_gettext("Accepted"), "rejected": lazy_gettext("Rejected"),
           "on-hold": lazy_gettext("Question for the clinic"), "in-progress": lazy_gettext("In progress"),
           "completed": lazy_gettext("Completed"), "cancelled": lazy_gettext("Cancelled"),
           "draft": lazy_gettext("Draft"), "issued": lazy_gettext("Waiting for payment"),
           "balanced": lazy_gettext("Paid"), "booked": lazy_gettext("Booked"), "pending": lazy_gettext("Held"),
           "fulfilled": lazy_gettext("Done")}


_HUB_NEW = lazy_gettext("New – to triage")  # a requested consult, as the hub (the doctor) reads it


def status_label(status: str | None) -> str:
    """A status in the user's language; a ``requested`` consult waits for the hub, which for a hub
    doctor is themself: to them it is new, to triage."""
    if status == "requested" and _signed_in_role() == "doctor":
        return said(_HUB_NEW)
    label = _STATUS.get(status or "")  # one translation looked up, not the whole table (a page has many)
    return said(label) if label is not None else (status or "—")


def _signed_in_role() -> str | None:
    if not has_request_context():
        return None
    user = g.get("user") or current_user()
    return user.role if user is not None else None


_OUTCOMES = {"applied": lazy_gettext("Counted toward the invoice"), "unmatched": lazy_gettext("Not matched yet"),
             "late-balanced": lazy_gettext("Arrived after the invoice was paid: to refund"),
             "late-cancelled": lazy_gettext("Arrived after the invoice was cancelled: to refund"),
             "refunded": lazy_gettext("Refunded")}


def outcome_label(outcome: str | None) -> str:
    """What became of a payment, in the user's language (billing's outcome codes)."""
    label = _OUTCOMES.get(outcome or "")
    return said(label) if label is not None else (outcome or "")


def refunded_label(amount: Any, at: Any) -> str:
    """A payment given back: "Đã hoàn 90.000 ₫ (05/12/2026 10:12)" (the time left out when unknown)."""
    if not at:
        return gettext("Refunded %(amount)s", amount=formatting.vnd(amount))
    return gettext("Refunded %(amount)s (%(time)s)", amount=formatting.vnd(amount), time=formatting.when(at))


def _refund_count(said: str, count: int) -> str:
    """A payment's refunds said with how many there were, when more than one."""
    return gettext("%(refunded)s, %(count)d refunds", refunded=said, count=count) if count > 1 else said


def payment_outcome(payment: Mapping[str, Any], refunds: list[dict[str, Any]] | None) -> str:
    """What became of a payment on the invoice page: given back, "Đã hoàn 10.000 ₫ (06/12/2026 00:29)"
    (a part of it, a credit given back: what still counts, ", còn tính 40.000 ₫ vào hóa đơn"; after the
    invoice was paid: "Đã hoàn sau thanh toán …"), else billing's outcome in words. What was given back
    is billing's ``refunded`` on the payment, all its refunds (an older summary: its refund's amount,
    ``refunds`` rows name their payment). A payment given back in several refunds says so, with the
    newest's time: "Đã hoàn 100.000 ₫ (06/12/2026 03:04), 2 lần hoàn"; after payment when the newest was."""
    mine = [r for r in refunds or [] if r.get("payment") == payment.get("id")]
    back = mine[-1] if mine else {}  # oldest first: the newest refund of the payment
    amount = int(payment.get("refunded") or sum(int(r.get("amount") or 0) for r in mine) or 0)
    if amount <= 0:
        return outcome_label(payment.get("outcome"))
    if back.get("afterSettlement"):  # the invoice stays paid; the receipt shows the refund
        if not back.get("at"):
            said = gettext("Refunded after payment %(amount)s", amount=formatting.vnd(amount))
        else:
            said = gettext("Refunded after payment %(amount)s (%(time)s)", amount=formatting.vnd(amount),
                           time=formatting.when(back["at"]))
        return _refund_count(said, len(mine))
    said = _refund_count(refunded_label(amount, back.get("at")), len(mine))
    kept = int(payment.get("amount") or 0) - amount
    if payment.get("outcome") != "applied" or kept <= 0:  # a late payment never counted; all of it went back
        return said
    return gettext("%(refunded)s; %(kept)s still counted toward the invoice", refunded=said,
                   kept=formatting.vnd(kept))


def minutes(value: float | int | None) -> str:
    """Minutes as the dashboard's CSV gives them (``report_facts.one_decimal``: whole, else one
    decimal), in the user's number format: ``2 phút``, ``2,5 phút``, ``1 giờ 2,5 phút``."""
    m = one_decimal(value)
    if m is None:
        return "—"
    hours, rest = divmod(m, 60)
    text = format_decimal(one_decimal(rest), format="0.#")
    return gettext("%(h)d h %(m)s min", h=int(hours), m=text) if hours else gettext("%(m)s min", m=text)


EXT_JOIN = "https://fhir.sen.vn/StructureDefinition/appointment-join-url"
EXT_ROOM = "https://fhir.sen.vn/StructureDefinition/appointment-video-room"


def video_link(appointment: dict[str, Any] | None, role: str) -> str | None:
    """The join link of the user's side: the doctor's for doctors, the clinic's (the patient's seat) else."""
    doctor = role == "doctor"
    for p in (appointment or {}).get("participant") or []:
        ref = str((p.get("actor") or {}).get("reference", ""))
        if ref.startswith(("Practitioner/", "PractitionerRole/")) == doctor:
            for e in p.get("extension") or []:
                if e.get("url") == EXT_JOIN:
                    return str(e.get("valueUrl"))
    return next((str(e.get("valueUrl")) for e in (appointment or {}).get("extension") or []
                 if e.get("url") == EXT_ROOM), None)


_ROLES = {"clinic": lazy_gettext("clinic"), "doctor": lazy_gettext("doctor"), "cashier": lazy_gettext("cashier"),
          "health-dept": lazy_gettext("health department"), "admin": lazy_gettext("administrator")}


def role_label(role: str) -> str:
    label = _ROLES.get(role)
    return said(label) if label is not None else role


@bp.after_request
def _headers(response: Response) -> Response:
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "same-origin")
    if response.mimetype == "text/html":
        response.headers.setdefault("Cache-Control", "no-store")  # pages hold patient data
        response.headers.setdefault(
            "Content-Security-Policy",
            "default-src 'self'; img-src 'self' data: blob:; style-src 'self' 'unsafe-inline'; "
            "frame-ancestors 'none'; form-action 'self'")
        if response.status_code >= 400 and g.get("error_page") and is_htmx():
            in_page(response)
    return response


# where an htmx request's error page is said: the page's problem box (base.html), above what the page shows
PROBLEM_BOX = "#page-problem"


def in_page(response: Response, always: bool = False) -> None:
    """An htmx request (a form sent in place, a search, a poll) answered by the portal's error page (signed
    out, not allowed, refused, a service down): the page's message and links are swapped into the page's
    problem box (``HX-Retarget``), which app.js shows and moves the focus to; the page and what was typed
    in it stay. htmx swaps no 4xx or 5xx by itself: app.js swaps those that name a target. A 413 (files too
    large) stays the form's own box's (app.js); ``always``: a 413 too (a form's text too large, no file)."""
    if response.status_code != 413 or always:
        response.headers.setdefault("HX-Retarget", PROBLEM_BOX)
        response.headers.setdefault("HX-Reswap", "innerHTML")
        response.headers.setdefault("HX-Reselect", "#problem")


def _error_page_rendered(sender: Flask, template: Any, context: dict[str, Any], **extra: Any) -> None:
    if template.name == "error.html":
        g.error_page = True


class Typed(NamedTuple):
    """A text the user typed into a form that was not sent, with its field's label (None: not known)."""
    label: str | None
    text: str


def _form_fields(form_class: type) -> dict[str, Any]:
    """A portal form's fields by name: the label of each box the user types text into (a text box, a text
    area, an amount, a number), None for the others (hidden ids and keys, choices, ticks, dates, files,
    passwords)."""
    from wtforms import DecimalField, HiddenField, IntegerField, PasswordField, StringField
    from wtforms.fields.core import UnboundField

    fields: dict[str, Any] = {}
    for name in dir(form_class):
        field = getattr(form_class, name, None)
        if isinstance(field, UnboundField):
            typed = issubclass(field.field_class, (StringField, IntegerField, DecimalField)) and not issubclass(
                field.field_class, (HiddenField, PasswordField))
            label = field.args[0] if field.args else field.kwargs.get("label")
            fields[name] = label if typed and label is not None else None
    return fields


@cache
def _portal_forms() -> list[dict[str, Any]]:
    """Every form of the portal's pages (each WTForms form class of sen_portal), as :func:`_form_fields`."""
    from wtforms import Form

    def subclasses(cls: type) -> list[type]:
        return [c for sub in cls.__subclasses__() for c in (sub, *subclasses(sub))]

    return [_form_fields(c) for c in dict.fromkeys(subclasses(Form)) if c.__module__.startswith("sen_portal.")]


def typed_text(form: Any, sent_as: Any = None) -> list[Typed]:
    """What the user typed into a form that was not sent: the non-empty values of its text boxes, in order, each
    with its box's label. An allow-list: the form sent is ``sent_as`` (the portal's form, class or instance, the
    view read the post with) or else the portal's form that has the most of the fields posted (a field's name
    without its form's prefix: ``cancel-reason`` is ``reason``), and only its text boxes are shown, never a
    token, key, hidden id, choice or password, nor any field no form of the portal types. A view that knows its
    form says so: a reject's one field, ``reason``, is as many forms' as a choice's (the take-on's reasons)."""
    posted = [(str(k).rsplit("-", 1)[-1], v) for k, v in form.items(multi=True) if isinstance(v, str) and v.strip()]
    if sent_as is not None:
        sent = [_form_fields(sent_as if isinstance(sent_as, type) else type(sent_as))]
    else:
        names = {name for name, _ in posted}
        overlap = {i: len(names & fields.keys()) for i, fields in enumerate(_portal_forms())}
        most = max(overlap.values(), default=0)
        sent = [_portal_forms()[i] for i, n in overlap.items() if n == most and n]
    shown = []
    for name, value in posted:
        labels = [fields[name] for fields in sent if name in fields]
        if labels and None not in labels and "password" not in name:
            texts = {str(label) for label in labels}
            shown.append(Typed(texts.pop() if len(texts) == 1 else None, value))
    return shown


def _done_already() -> Any:
    """A sign-in or sign-out sent again after its answer was lost on the way back, once its cookie had come (the
    answer's headers, not its body): the session is the new one and the form's token the old one's. Nothing is
    left to do, nor to forge: signed in, the sign-in goes on to the page it would have (the session unchanged);
    signed out, the sign-out to the sign-in page. None for any other form."""
    from .auth import HOME, safe_next
    from .clinic import done_in_place

    user = current_user()
    if request.endpoint == "web.login" and user is not None:
        return done_in_place(safe_next(request.form.get("next")) or url_for(HOME[user.role]), None)
    if request.endpoint == "web.logout" and user is None:
        return done_in_place(url_for("web.login"), None)
    return None


@bp.errorhandler(CSRFError)
def _csrf_error(err: CSRFError) -> Any:
    """A page's POST whose CSRF token failed. Signed out meanwhile (the session ended, the cookie was lost):
    said, with a link to sign in again that comes back to the form's page; either way, what was typed is
    shown (escaped, to copy) since nothing was sent."""
    done = _done_already()
    if done is not None:
        return done
    typed = typed_text(request.form)
    view = current_app.view_functions.get(request.endpoint or "")
    if current_user() is None and getattr(view, "needs_sign_in", False):
        return signed_out_page(typed)[0], 400
    if is_htmx() and current_user() is not None:
        # a form sent in place from a page opened before the user signed in again (the session ended, "Sign in
        # again" in another tab): the page stays, with what was typed and the files chosen; the answer carries
        # this session's token (error.html data-csrf), which app.js puts into the page, so sending it once more
        # goes through. Told "reload the page", the nurse lost the form a second time
        return render_template("error.html", title=gettext("The form expired"), renewed=generate_csrf(),
                               message=gettext("This page was opened before you signed in again, so nothing was "
                                               "sent. It can send now: send it again (what you typed is kept).")), 400
    return render_template("error.html", title=gettext("The form expired"), typed=typed,
                           message=gettext("The form was open too long or came from elsewhere. "
                                           "Go back, reload the page and send it again.")), 400


@bp.errorhandler(BackendError)
def _backend_error(err: BackendError) -> Any:
    """A back-end's answer a page did not handle itself: an outage is "Service unavailable" (503, 502 for a
    service that answered with an error: backend.outage_status); a
    refusal is no outage: a record the service does not know (404, 410) is the portal's 404 "Not
    found", one the user may not see or change (403) its 403 "Not allowed", any other refusal 400."""
    message = backend_message(err)
    if err.kind in ("down", "slow", "failed"):
        return render_template("error.html", title=gettext("Service unavailable"), message=message), \
            outage_status(err)
    if err.status in (404, 410):
        return render_template("error.html", title=gettext("Not found"), message=message), 404
    if err.status == 403:
        return render_template("error.html", title=gettext("Not allowed"), message=message), 403
    return render_template("error.html", title=gettext("The request was refused"), message=message), 400


@bp.errorhandler(PyMongoError)
def _database_error(err: PyMongoError) -> Any:
    """The portal's own database (the reporting read model the dashboard and its downloads read) out of reach:
    pymongo's lost connection or timeout (ServerSelectionTimeoutError, AutoReconnect, NetworkTimeout), or
    FerretDB's while the PostgreSQL under it restarts (``sen_shared.mongo.unavailable``). An outage like a
    back-end's (:func:`_backend_error`): 503 "Service unavailable" in the user's language with Retry-After, an
    htmx request's in the page's problem box (:func:`_headers`), not 500. The page waits at most the client's
    server selection (``sen_shared.mongo.CLIENT_OPTIONS``, 5 s). Any other database error is a bug: 500."""
    from sen_shared.mongo import unavailable
    from sen_shared.web import DATABASE_RETRY_AFTER

    if not unavailable(err):
        return _unexpected(err)
    current_app.logger.warning("the portal's database is out of reach: %s", type(err).__name__)
    response = current_app.make_response((render_template(
        "error.html", title=gettext("Service unavailable"),
        message=gettext("The dashboard's figures cannot be read right now: the portal's database does not "
                        "answer. Try again in a moment.")), 503))
    response.headers["Retry-After"] = str(DATABASE_RETRY_AFTER)
    return response


@bp.errorhandler(Exception)
def _unexpected(err: Exception) -> Any:
    from werkzeug.exceptions import HTTPException

    if isinstance(err, HTTPException):
        if err.code == 405:
            return method_not_allowed(err)
        if err.code == 413:
            return body_too_large(err)
        if err.code == 404:
            return render_template("error.html", title=gettext("Not found"),
                                   message=gettext("This page or record does not exist.")), 404
        return err
    current_app.logger.error("page failed: %s", type(err).__name__, exc_info=err)
    return render_template("error.html", title=gettext("Something went wrong"),
                           message=gettext("The page could not be shown. Try again in a moment; "
                                           "if it keeps failing, tell the administrator.")), 500


def backend_message(err: BackendError) -> str:
    names = {"ehr": gettext("The health record service"), "teleconsult": gettext("The teleconsult service"),
             "billing": gettext("The billing service")}
    who = names.get(err.service, err.service)
    if err.kind == "down":
        return gettext("%(who)s cannot be reached right now. Nothing was changed; try again in a moment.",
                       who=who)
    # a page only shown (a GET: a list, a record) had nothing typed to keep; a form sent keeps what was typed
    shown = request.method in ("GET", "HEAD")
    if err.kind == "slow":
        if shown:
            return gettext("%(who)s is answering too slowly. Try again in a moment.", who=who)
        return gettext("%(who)s is answering too slowly. Try again in a moment; what you typed is kept.",
                       who=who)
    if err.kind == "failed":
        if shown:
            return gettext("%(who)s failed to answer. Try again in a moment.", who=who)
        return gettext("%(who)s failed to answer. Try again in a moment; what you typed is kept.", who=who)
    if err.status == 403:
        return gettext("%(who)s refused: you are not allowed to do this.", who=who)
    if err.status in (404, 410):
        return gettext("%(who)s does not know this record.", who=who)
    from .refusals import detail_of, explain

    current_app.logger.info("refused by a service", extra=detail_of(err))
    said = explain(err)
    if said is not None:
        return said
    # a refusal the portal has no sentence for: the service's English detail on English pages only
    english = select_locale() == "en" and bool(err.detail)
    if err.status in (409, 412):
        if english:
            return gettext("%(who)s refused because the record changed meanwhile: %(detail)s", who=who,
                           detail=err.detail)
        return gettext("%(who)s refused because the record changed meanwhile. Reload the page and try again.",
                       who=who)
    if english:
        return gettext("%(who)s refused the request: %(detail)s", who=who, detail=err.detail)
    return gettext("%(who)s refused the request. Check what you entered and try again; if it keeps "
                   "failing, tell the administrator.", who=who)


def _asset_path(endpoint: str, values: dict[str, Any]) -> Path | None:
    """The file an asset address names: one of the portal's static files, or an npm package's file."""
    if endpoint == "web.vendor":
        rel = VENDOR.get(str(values.get("name")))
        return Path(current_app.config["SEN_ASSETS"]) / rel if rel else None
    name = str(values.get("filename", ""))
    path = _static_paths.get(name)
    if path is None:  # resolving (realpath) was a tenth of a page's CPU: once per process and name
        path = (STATIC / name).resolve()
        if len(_static_paths) < 1024:  # names come from the pages and from requests: bounded
            _static_paths[name] = path
    return path if path.parent == STATIC and path.is_file() else None


def _asset(path: Path) -> tuple[bytes, str] | None:
    """The file's bytes and the hash naming that version (read once per process per version of the file);
    None when there is no such file (``make assets`` not run)."""
    try:
        st = path.stat()
    except OSError:
        return None
    stamp = (st.st_mtime_ns, st.st_size)
    hit = _assets.get(path)
    if hit is None or hit[0] != stamp:
        raw = path.read_bytes()
        hit = (stamp, raw, hashlib.sha256(raw).hexdigest()[:12])
        _assets[path] = hit
    return hit[1:]


@bp.url_defaults
def _asset_version(endpoint: str, values: dict[str, Any]) -> None:
    """``url_for`` of an asset adds ``?v=<hash of its bytes>``: the address changes when the file does, so the
    file can be cached for a year (:data:`IMMUTABLE`) and a returning browser downloads nothing."""
    if endpoint in ASSET_ENDPOINTS and "v" not in values:
        path = _asset_path(endpoint, values)
        found = _asset(path) if path else None
        if found:
            values["v"] = found[1]


def serve_asset(path: Path | None) -> Response:
    """An asset (compressed on the way out by Flask-Compress, as the pages are: :func:`init_web`); the version
    the page named (``?v=``) cached a year, any other address revalidated by its ETag."""
    found = _asset(path) if path else None
    if found is None:
        abort(404)
    raw, version = found
    resp = Response(raw, mimetype=mimetypes.guess_type(path.name)[0] or "application/octet-stream")
    resp.set_etag(version)
    resp.headers["Cache-Control"] = IMMUTABLE if request.args.get("v") == version else "no-cache"
    return resp.make_conditional(request)


@bp.route("/assets/<path:filename>", endpoint="static")
def static_file(filename: str) -> Response:
    """The portal's own CSS, scripts and icon (web/static)."""
    return serve_asset(_asset_path("web.static", {"filename": filename}))


@bp.route("/assets/vendor/<name>")
def vendor(name: str) -> Response:
    """A front-end package's file (installed by ``make assets``)."""
    return serve_asset(_asset_path("web.vendor", {"name": name}))


@bp.route("/favicon.ico")
def favicon() -> Response:
    """The portal's icon where a browser asks for it by itself (a file opened alone has no ``<link rel="icon">``;
    the pages name static/favicon.svg): the same small SVG, from the portal, cached a day."""
    resp = serve_asset(STATIC / "favicon.svg")
    resp.headers["Cache-Control"] = "public, max-age=86400"
    return resp


@bp.route("/language", methods=["POST"])
def language() -> Any:
    """The page again in the other language: ``next`` (the page's path and query), when it answers a
    GET; a page a POST rendered (a form's errors, the slots found) is no GET's: then the page the user
    came from (the Referer, this site's only), else the nearest page above it (``/invoices/<id>`` for
    ``/invoices/<id>/cash``), else the user's home. Sent in place (base.html), there by ``HX-Redirect``; sent
    again after its answer was lost, the same language is chosen again."""
    from .auth import safe_next
    from .clinic import done_in_place

    lang = request.form.get("lang", "vi")
    session["lang"] = lang if lang in LANGUAGES else "vi"
    nxt = safe_next(request.form.get("next")) or "/"
    if _answers_get(nxt):
        from .notices import say_again

        say_again(request.form.get("said"), nxt)  # the step the page just said, said again in this language
        return done_in_place(nxt, None)
    came = _on_this_site(request.referrer)
    if came and came.partition("?")[0] != nxt.partition("?")[0] and _answers_get(came):
        return done_in_place(came, None)
    return done_in_place(nearest_page(nxt) or url_for("web.home"), None)


def nearest_page(path: str) -> str | None:
    """The nearest page above ``path`` a GET reaches (``/invoices/<id>`` for ``/invoices/<id>/cash``), if any."""
    parts = path.partition("?")[0].rstrip("/").split("/")
    while len(parts) > 2:
        parts.pop()
        if _answers_get("/".join(parts)):
            return "/".join(parts)
    return None


def _answers_get(target: str) -> bool:
    """Whether a GET of this site's path ``target`` (a query allowed) reaches a page."""
    from werkzeug.exceptions import HTTPException
    from werkzeug.routing import RequestRedirect

    adapter = current_app.create_url_adapter(request)
    if adapter is None:
        return False
    try:
        adapter.match(target.partition("?")[0], method="GET")
    except RequestRedirect:
        return True
    except HTTPException:  # 405: a POST-only path; 404: none
        return False
    return True


def _on_this_site(url: str | None) -> str | None:
    """The path and query of ``url`` when it is this site's (scheme and host of this request), else None."""
    from urllib.parse import urlsplit

    from .auth import safe_next

    if not url:
        return None
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or parts.netloc != request.host:
        return None
    return safe_next(parts.path + (f"?{parts.query}" if parts.query else ""))


# the portal's JSON API (specs/portal.yaml), whose unknown addresses keep connexion's problem JSON
API_PREFIXES = ("/api/", "/admin/")


def no_such_page(err: Any) -> Any:
    """A 404: a page's (no such record, ``abort(404)``), and routing's (an address no route has, ``/nope``)
    asked by a browser (it prefers HTML), is the portal's readable page in the user's language; the JSON
    API's addresses, and a client asking for JSON (or anything), keep connexion's problem JSON. (Registered
    on the app: a 404 of routing reaches no blueprint's handler, and the app's handler for the code comes
    before the blueprint's for ``Exception``.)"""
    from werkzeug.exceptions import HTTPException

    accepts = request.accept_mimetypes
    page = request.blueprint == "web" or (  # a page's own 404 (abort(404)) is a page, whoever asks
        request.url_rule is None and not request.path.startswith(API_PREFIXES)
        and accepts.quality("text/html") > accepts.quality("application/json"))
    if not page:
        handler = current_app.error_handler_spec[None][None].get(HTTPException)
        return err if handler is None else handler(err)
    response = current_app.make_response((render_template(
        "error.html", title=gettext("Not found"), message=gettext("This page or record does not exist.")), 404))
    return _headers(response)  # an htmx request's: in the page's problem box


@bp.before_request
def _post_only_address() -> Any:
    """A GET of a POST-only address that a page's address with a part taken from it also matches
    (``/patients/take-on``, ``/patients/search`` are no ``/patients/<pid>``): as any GET of a POST-only
    address (:func:`method_not_allowed`), the page the form belongs to, not a record named "take-on"."""
    from werkzeug.exceptions import HTTPException

    rule = request.url_rule
    if request.method not in ("GET", "HEAD") or rule is None or "<" not in rule.rule:
        return None
    adapter = current_app.create_url_adapter(request)
    try:
        posted, _ = adapter.match(request.path, method="POST", return_rule=True)
    except HTTPException:
        return None
    if "<" in posted.rule or "GET" in (posted.methods or ()) or not str(posted.endpoint).startswith("web."):
        return None
    above = page_above()
    return redirect(above, 303) if above else None


def page_above() -> str | None:
    """The nearest page above this request's path, its query kept (``/invoices/<id>?p=…`` for
    ``/invoices/<id>/refund?p=…``), if any."""
    from .auth import safe_next

    above = safe_next(nearest_page(request.path))
    if above is None:
        return None
    query = request.query_string.decode("latin-1")
    return safe_next(f"{above}?{query}" if query else above) or above


def method_not_allowed(err: Any) -> Any:
    """A 405 of a portal page (a POST-only path opened by a link, a bookmark, a reload): a GET goes to
    the page the form belongs to, the nearest page above it (``/consults/<id>`` for ``/consults/<id>/answer``,
    ``/invoices/<id>?p=…`` for ``/invoices/<id>/refund?p=…``: its query kept); without one, the portal's
    readable page in the user's language. Other paths (the JSON APIs) keep connexion's answer."""
    from werkzeug.exceptions import HTTPException

    adapter = current_app.create_url_adapter(request)
    endpoint = None
    allowed = sorted(getattr(err, "valid_methods", None) or ())
    for method in allowed:
        try:
            endpoint = adapter.match(request.path, method=method)[0] if adapter is not None else None
            break
        except HTTPException:
            continue
    if not (endpoint or "").startswith("web."):
        handler = current_app.error_handler_spec[None][None].get(HTTPException)
        if handler is None:
            return err
        return handler(err)
    above = page_above() if request.method in ("GET", "HEAD") else None
    if above is not None:  # nothing is sent again: a GET only shows a page
        return _headers(current_app.make_response(redirect(above, 303)))
    response = current_app.make_response((render_template(
        "error.html", title=gettext("This page cannot be opened this way"),
        message=gettext("This page only shows the answer to a form you send. Go back to the page "
                        "before it, or to your home page.")), 405))
    response.headers["Allow"] = ", ".join(allowed)
    return _headers(response)
