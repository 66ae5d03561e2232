"""A page served to Chromium by a Flask test client through Playwright's routing: no stack, no network.

``fulfil_from(client, route)`` answers one routed request with what the portal's test client answers the same
method, path, query and body (the content type, the CSRF token and htmx's own headers passed on), so the page runs
its real template, app.js and htmx against the app under test."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit


def fulfil_from(client: Any, route: Any) -> None:
    req, url = route.request, urlsplit(route.request.url)
    r = client.open(url.path + (f"?{url.query}" if url.query else ""), method=req.method,
                    data=req.post_data_buffer, headers={k: v for k, v in req.headers.items()
                                                        if k.lower() in ("content-type", "x-csrftoken")
                                                        or k.lower().startswith("hx-")})
    route.fulfill(status=r.status_code, body=r.data,
                  headers={"Content-Type": r.headers.get("Content-Type", "text/plain")})
