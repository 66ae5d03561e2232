"""For page tests whose dashboard figures are the test's own (``domain.dashboard``, ``dashboard.csv_rows`` or
``dashboard.compute`` replaced): the portal's database answers. Page tests have none (``tests.support.portal_app``:
a closed port, which pymongo's client knows out of reach after its first use), and the database's door
(``sen_portal.portal_db``) does not hand out a database known out of reach; the dashboard's reads are the test's,
so its door hands them a database they do not use, as one that answers would."""

from __future__ import annotations

from contextlib import nullcontext
from types import SimpleNamespace
from typing import Any


def read_model_answers(monkeypatch: Any) -> None:
    """The dashboard's uses of the portal's database (its figures, its downloads) are let through to the test's
    own figures; every other use (the sign-out check, what a session keeps) still finds no database."""
    from sen_portal.web import dashboard

    monkeypatch.setattr(dashboard, "portal_db", SimpleNamespace(attempt=lambda *args, **kwargs: nullcontext(None)))
