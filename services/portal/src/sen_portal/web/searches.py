"""A search kept in the address without its words: Back and refresh show it again, no name in a URL.

A search form posts what was typed (a name, a CCCD number: never in a URL, an access log or the
browser's history); the answer asks htmx to put ``<page>?s=<key>`` in the address bar
(``HX-Push-Url``), the key naming the search kept on the server under the user's session (:mod:`.kept`:
never in the cookie, which anyone holding a copy reads; until the session ends or signs out). The key is an
HMAC of the session's id and the search under the app's key: the same search gets the same key, and nobody
can tell what was searched from it. The page's GET with ``?s=`` runs that search again,
so Back from a result, a refresh or htmx's history restore (the search forms carry
``hx-history="false"``: no copy of the results in the browser's localStorage) show the results and
the words typed. A key the session does not hold (signed out, another browser) is an empty search; the
portal's database out of reach, the search is answered without its key in the address.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re

from flask import current_app, request, session, url_for

from . import kept

KEY = re.compile(r"[\w-]{4,32}")


def remember(kind: str, q: str) -> str | None:
    """The key of the search ``q`` of the page ``kind`` (the same key for the same search again); None when it
    could not be kept (no session id, the database out of reach)."""
    mac = hmac.new(str(current_app.secret_key).encode(), f"{session.get('sid')}\0{kind}\0{q}".encode(), hashlib.sha256)
    key = base64.urlsafe_b64encode(mac.digest()[:9]).decode()  # 72 bits, 12 characters
    return key if kept.put(f"search/{key}", [kind, q]) else None


def recall(kind: str) -> str | None:
    """What was typed for the search ``?s=`` names, when it is one of ``kind``'s this session kept."""
    key = request.args.get("s", "")
    found = kept.get(f"search/{key}") if KEY.fullmatch(key) else None
    return str(found[1]) if isinstance(found, list) and len(found) == 2 and found[0] == kind else None


def push_url(endpoint: str, kind: str, q: str) -> dict[str, str]:
    """The headers putting the page ``endpoint`` with this search's key in the address bar (htmx); none when the
    search could not be kept (the address stays)."""
    key = remember(kind, q)
    return {"HX-Push-Url": url_for(endpoint, s=key)} if key else {}
