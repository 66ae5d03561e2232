"""Signing in and out: OIDC (authorization code + PKCE, Authlib) when configured, else the
development sign-in with the demo users (``users.DEMO_USERS``)."""

from __future__ import annotations

import logging
import time
from typing import Any

from flask import Flask, current_app, redirect, render_template, request, session, url_for
from flask_babel import gettext
from pymongo.errors import PyMongoError

from ..config import PortalSettings
from . import bp, is_htmx, kept, login_required, signouts, tokens
from .forms import LoginForm
from .users import User, check_demo_password

log = logging.getLogger("sen.portal.auth")
HOME = {"clinic": "web.clinic_home", "doctor": "web.worklist", "cashier": "web.invoices",
        "health-dept": "web.dashboard", "admin": "web.home"}


def init_oidc(app: Flask, settings: PortalSettings) -> None:
    app.config["SEN_DEMO_USERS"] = settings.demo_users  # the development sign-in's people of the province
    app.config["SEN_DEMO_PASSWORD_HASHES"] = settings.demo_password_hashes  # tests' cheap hashes, else none
    app.config["SEN_OIDC"] = bool(settings.oidc_issuer and settings.oidc_client_id)
    if not app.config["SEN_OIDC"]:
        return
    from authlib.integrations.flask_client import OAuth

    oauth = OAuth(app)
    oauth.register(
        "sen", client_id=settings.oidc_client_id, client_secret=settings.oidc_client_secret or None,
        server_metadata_url=settings.oidc_issuer.rstrip("/") + "/.well-known/openid-configuration",
        client_kwargs={"scope": "openid profile", "code_challenge_method": "S256"})
    app.extensions["sen_oauth"] = oauth


def safe_next(value: str | None) -> str | None:
    """``value`` when it is a path of this site (``/…``), else None: never ``//host`` nor ``/\\host``
    (which browsers read as another site), never a control character."""
    if not value or not value.startswith("/") or value.startswith(("//", "/\\")):
        return None
    if "\\" in value or any(ord(c) < 32 or ord(c) == 127 for c in value):
        return None
    return value


def _start_session(user: User, token: dict[str, Any] | None = None) -> None:
    """A signed-in session: the cookie holds who the user is, the sign-in's time and its random id; an OIDC
    sign-in's tokens (``token``) are kept on the server under that id (web/tokens.py), never in the cookie. Their
    database out of reach raises (PyMongoError) before the session is made."""
    lang = session.get("lang")
    sid = signouts.new_session_id()  # what signing out ends on the server (signouts), and names the tokens
    signed_in_at = time.time()
    if token is not None:
        tokens.store(sid, token, signed_in_at)
    session.clear()  # a new session id for the signed-in user
    session.permanent = True
    session["user"] = user.to_session()
    session["signed_in_at"] = signed_in_at
    session["sid"] = sid
    if lang:
        session["lang"] = lang
    if token is not None:
        session["oidc"] = True  # the back-ends are called with the session's tokens (tokens.access_token)


@bp.route("/login", methods=["GET", "POST"])
def login() -> Any:
    if current_app.config.get("SEN_OIDC"):
        oauth = current_app.extensions["sen_oauth"]
        session["next"] = safe_next(request.args.get("next"))
        return oauth.sen.authorize_redirect(url_for("web.oidc_callback", _external=True))
    from .clinic import done_in_place

    form = LoginForm(next=request.args.get("next", ""))
    error = None
    if form.validate_on_submit():
        user = check_demo_password(form.username.data or "", form.password.data or "",
                                   current_app.config.get("SEN_DEMO_USERS"),
                                   current_app.config.get("SEN_DEMO_PASSWORD_HASHES"))
        if user is not None:
            _start_session(user)
            log.info("signed in", extra={"role": user.role})
            # sent in place (login.html): the page asked for by HX-Redirect. Sent again after its answer was lost
            # (the new session's cookie with it), the browser's session is still the one before: the token it
            # sends is that session's, and the user is signed in anew
            return done_in_place(safe_next(form.next.data) or url_for(HOME[user.role]), None)
        error = gettext("The user name or the password is wrong.")
    # refused, sent in place: the sign-in box again (htmx swaps a 2xx only), the user name kept, the password not
    return render_template("login.html", form=form, error=error, title=gettext("Sign in")), (
        401 if error and not is_htmx() else 200)


@bp.route("/auth/callback")
def oidc_callback() -> Any:
    from authlib.integrations.base_client import OAuthError
    from sen_shared.auth import TokenVerifier
    from sen_shared.errors import Forbidden, Unauthorized

    oauth = current_app.extensions.get("sen_oauth")
    if oauth is None:
        return redirect(url_for("web.login"))
    from sen_shared.runtime import current

    cfg = current().settings
    try:
        # the state, the PKCE verifier (sent with the code), the ID token's signature and nonce (Authlib)
        token = oauth.sen.authorize_access_token()
        access = token["access_token"]
        # the access token the APIs will get: signed by a key of the issuer's JWKS, for Sen (PyJWT)
        principal = TokenVerifier(issuer=cfg.jwt_issuer, audience=cfg.jwt_audience, jwks_url=cfg.jwks_url,
                                  dev_key_path=cfg.dev_key_path).verify(access)
    except (OAuthError, Unauthorized, Forbidden, KeyError, ValueError) as err:
        log.warning("OIDC sign-in refused: %s", type(err).__name__)
        session.pop("next", None)
        return render_template("error.html", title=gettext("Sign-in failed"),
                               message=gettext("The sign-in could not be completed. Sign in again.")), 401
    role = next((r for r in ("admin", "health-dept", "doctor", "clinic", "cashier") if r in principal.roles), None)
    if role is None:
        return render_template("error.html", title=gettext("Not allowed"),
                               message=gettext("Your account has no role in Sen.")), 403
    userinfo = token.get("userinfo") or {}
    user = User(username=principal.sub, role=role, name=str(userinfo.get("name") or principal.name or principal.sub),
                facility=principal.facility, practitioner=principal.practitioner)
    nxt = session.get("next")
    try:
        _start_session(user, token)
    except PyMongoError as err:  # the tokens could not be kept: no session without them
        log.warning("OIDC sign-in not kept: %s", type(err).__name__)
        session.pop("next", None)
        return render_template("error.html", title=gettext("Sign-in failed"),
                               message=gettext("The sign-in could not be completed. Sign in again.")), 503
    return redirect(safe_next(nxt) or url_for(HOME[role]))


@bp.route("/session/alive")
def session_alive() -> Any:
    """Someone is typing in a page's form: app.js asks at most every 5 minutes while they do (base.html
    ``data-alive``), and the session's idle expiry (``SEN_PORTAL_IDLE_MINUTES``) moves on as at any request
    (``SessionInterface``). The minutes written after an hour's video visit in another tab made no request
    meanwhile, and "Sign off" found the doctor signed out, eight boxes to copy by hand. Reading alone asks
    nothing: a page left open still signs out. 204; 401 once signed out. No back-end is called."""
    return ("", 204) if session.get("user") else ("", 401)


@bp.route("/logout", methods=["POST"])
def logout() -> Any:
    signouts.sign_out(session.get("sid"), session.get("signed_in_at"))  # no copy of the cookie opens a page again
    if session.get("oidc"):
        tokens.forget(session.get("sid"))  # nor do its tokens call a back-end again
    kept.forget(session.get("sid"))  # nor is what it kept of its patients (searches, a take-on) read again
    lang = session.get("lang")
    session.clear()
    if lang:
        session["lang"] = lang
    # sent in place (base.html): the sign-in page by HX-Redirect. Sent again after its answer was lost, the cookie
    # is the signed-out session's: its token still checks (_session_and_csrf reads the session before
    # signouts clears it), and signing out what is signed out already ends here again
    from .clinic import done_in_place

    return done_in_place(url_for("web.login"), None)


@bp.route("/")
def home() -> Any:
    from .users import User as _U  # noqa: F401

    user_data = session.get("user")
    if not user_data:
        return redirect(url_for("web.login"))
    role = user_data.get("role")
    if role != "admin":
        return redirect(url_for(HOME.get(role, "web.login")))
    return _admin_home()


@login_required("admin")
def _admin_home() -> Any:
    return render_template("home.html", title=gettext("Home"))
