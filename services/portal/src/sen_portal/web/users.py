"""Who may sign in, and what a signed-in user is.

Development sign-in (no OIDC issuer configured, never in production): one demo user per
role, passwords hashed with werkzeug.security (scrypt, its default cost: n=2^15, r=8, p=1, ~0.1 s a check;
tests give the same passwords hashed with cheap parameters, ``SEN_PORTAL_DEMO_PASSWORD_HASHES``, refused in
production). The README lists them:

    clinic / sen-clinic         Võ Minh Tâm, Trạm Y tế xã Mỹ Hiệp
    doctor / sen-doctor         BS. Nguyễn Văn An, Bệnh viện Đa khoa Đồng Tháp (the hub)
    cashier / sen-cashier       Trạm Y tế xã Mỹ Hiệp
    health-dept / sen-health-dept   Sở Y tế Đồng Tháp
    admin / sen-admin

A province that ``make run`` serves from its own province file gives these users its own people
(``SEN_PORTAL_DEMO_USERS``, from the file's ``demoUsers``): the same user names and passwords, its names,
facilities and practitioners.

With OIDC the user comes from the issuer's access token (roles, facility, practitioner).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from typing import Any

from flask import has_request_context
from flask_babel import lazy_gettext
from werkzeug.security import check_password_hash

ROLES = ("clinic", "doctor", "cashier", "health-dept", "admin")
ADMIN_NAME = "Quản trị viên"  # the demo admin is named by their role, not a person
# names that are a role's Vietnamese label, not a person's: shown in the page's language (review 12: an English
# price history said "Quản trị viên" changed a price); a person's name is never translated
_ROLE_NAMES = {ADMIN_NAME: lazy_gettext("Administrator")}


def shown_name(name: str | None) -> str:
    """A user's name as a page shows it (the header, who changed a price): a role's label in the page's
    language (:data:`_ROLE_NAMES`), any other name as it is (and every name outside a request)."""
    label = _ROLE_NAMES.get(name or "") if has_request_context() else None
    return str(label) if label is not None else name or ""


def named_by_role(name: str | None) -> bool:
    """Whether ``name`` is a role's label (the demo admin's "Quản trị viên"), not a person's: the header then
    says the role once, not "Quản trị viên (quản trị)" (walk of session 28)."""
    return (name or "") in _ROLE_NAMES


@dataclass(frozen=True)
class User:
    username: str
    role: str
    name: str
    facility: str | None = None
    practitioner: str | None = None

    def to_session(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_session(cls, data: dict[str, Any]) -> User:
        return cls(**{k: data.get(k) for k in ("username", "role", "name", "facility", "practitioner")})

    def can(self, *roles: str) -> bool:
        return self.role in roles or self.role == "admin"


DEMO_USERS: dict[str, tuple[User, str]] = {
    "clinic": (User("clinic", "clinic", "Võ Minh Tâm", facility="tyt-my-hiep", practitioner="ys-vo-minh-tam"),
               "scrypt:32768:8:1$RDiZhyfLgetWbrRI$1bfac5bc88908c136660edff5a5014c03102b24c562ec8b51e5534fd7c4dd03a"
               "f99a19002def09cd5d60fb5fc975405bef0db8b72fdc72dc62e931388873d193"),
    "doctor": (User("doctor", "doctor", "BS. Nguyễn Văn An", facility="bvdk-dong-thap",
                    practitioner="bs-nguyen-van-an"),
               "scrypt:32768:8:1$qfPD4VkWetc3BLpN$e7a870a179675ddace36cabdb7a49e8b626307bcd61eb27330fa5ca7e3aef075"
               "b16e9d039adea382bb3731418f62f49062c5cad6159c6911c310ffe1b1b8b296"),
    "cashier": (User("cashier", "cashier", "Lê Thị Thu", facility="tyt-my-hiep"),
                "scrypt:32768:8:1$rQ903wnq5evWv6je$d1a40de099fcfa80d69660cf063a5d6b90ae5c81dad15f1906fded0e4cd2f2f9"
                "7af8b25b16a050878a6471ac372c7b5007608444001529b2976621a563bb3a80"),
    "health-dept": (User("health-dept", "health-dept", "Sở Y tế Đồng Tháp", facility="so-y-te-dong-thap"),
                    "scrypt:32768:8:1$L90CNfS4NGm7OK83$e3499b4f5d61408640f1dbd1c84cef2865f16bcc8b97dd2062d778997f"
                    "57683058c44c7b085c43c77addcdb8d76903d5accea8510ee76f8b2d29fd3d4b8f5db2"),
    "admin": (User("admin", "admin", ADMIN_NAME),
              "scrypt:32768:8:1$6qLyhmNZciD6QTWO$86cb2a9a885ea11693e980409fab0e03431ea82fea26b15afb853f1b848d12441"
              "7c311204092f5833e7589927c760faa284be2cc61a70810d33f455a3b528982"),
}

# a hash to check against when the user is unknown, so a wrong name takes as long as a wrong password
_DUMMY = DEMO_USERS["admin"][1]


def check_demo_password(username: str, password: str, people: Mapping[str, Mapping[str, str]] | None = None,
                        hashes: Mapping[str, str] | None = None) -> User | None:
    """The demo user whose password this is, or None. ``people`` (SEN_PORTAL_DEMO_USERS): the province's
    name, facility and practitioner for a demo user, in place of the demo province's. ``hashes``
    (SEN_PORTAL_DEMO_PASSWORD_HASHES, tests only): a demo user's password hashed with cheap scrypt parameters,
    in place of its built-in hash (werkzeug's default cost, n=2^15, r=8, p=1)."""
    user, pwhash = DEMO_USERS.get(username.strip().lower(), (None, _DUMMY))
    pwhash = (hashes or {}).get(user.username if user is not None else "admin", pwhash)
    ok = check_password_hash(pwhash, password)
    if not ok or user is None:
        return None
    return replace(user, **(people or {}).get(user.username, {}))
