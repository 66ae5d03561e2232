"""A search kept in the address without its words: Back and refresh show it again, no name in a URL.

A search form posts what was typed (a name, a CCCD number: never in a URL, an access log or the
browser's history); the answer asks htmx to put ``<page>?s=<key>`` in the address bar
(``HX-Push-Url``), the key a random one naming the search kept in the user's session (the signed,
HttpOnly cookie), the last :data:`KEEP` of them. The page's GET with ``?s=`` runs that search again,
so Back from a result, a refresh or htmx's history restore (the search forms carry
``hx-history="false"``: no copy of the results in the browser's localStorage) show the results and
the words typed. A key the session does not hold (signed out, another browser) is an empty search.
"""

from __future__ import annotations

import secrets

from flask import request, session, url_for

SESSION_KEY = "searches"
KEEP = 8  # searches kept per session (a few tabs' worth; each at most the form's 100 characters)


def remember(kind: str, q: str) -> str:
    """The key of the search ``q`` of the page ``kind`` (the same key for the same search again)."""
    kept: dict[str, list[str]] = dict(session.get(SESSION_KEY) or {})
    key = next((k for k, v in kept.items() if v == [kind, q]), None) or secrets.token_urlsafe(6)
    kept.pop(key, None)
    kept[key] = [kind, q]  # the newest last; the oldest go
    session[SESSION_KEY] = dict(list(kept.items())[-KEEP:])
    return key


def recall(kind: str) -> str | None:
    """What was typed for the search ``?s=`` names, when it is one of ``kind``'s this session kept."""
    key = request.args.get("s", "")
    kept = (session.get(SESSION_KEY) or {}).get(key) if 4 <= len(key) <= 32 else None
    return kept[1] if isinstance(kept, list) and len(kept) == 2 and kept[0] == kind else None


def push_url(endpoint: str, kind: str, q: str) -> dict[str, str]:
    """The headers putting the page ``endpoint`` with this search's key in the address bar (htmx)."""
    return {"HX-Push-Url": url_for(endpoint, s=remember(kind, q))}
