"""Handler return values that name their content type.

connexion cannot guess which media type to use when an operation documents
several (JSON for success, problem+json for errors), so handlers say it.
"""

from __future__ import annotations

from typing import Any

JSON = "application/json"


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None,
                  content_type: str = JSON) -> tuple[Any, int, dict[str, str]]:
    return body, status, {"Content-Type": content_type, **(headers or {})}
