"""What a caller may not see is answered as what a made-up id gets (FHIR security.html#AccessDenied).

:func:`answered_as_missing` sends a request naming a record the caller may not see and the same request
naming an id nobody holds, and checks that the two answers are one: the same status (404), the same body
and the same headers once the id is put in place of the other (a body that names the id names it the same
way); the answer is returned. Used by the teleconsult and billing tests (the EHR's have their own,
``test_ehr_access._as_missing``)."""

from __future__ import annotations

import uuid
from typing import Any

# headers that differ from one answer to the next whatever they answer
VARYING = frozenset({"date", "server", "content-length", "x-correlation-id", "x-request-id"})


def answered_as_missing(client: Any, method: str, path: str, rid: str, *, headers: dict[str, str],
                        content: str | bytes | None = None, status: int = 404) -> Any:
    """``method path`` (``rid`` in it, and in ``content`` if there) answers as it does with a made-up id."""
    made_up = f"khong-co-{uuid.uuid4().hex[:8]}"

    def other(value: Any) -> Any:
        if isinstance(value, bytes):
            return value.replace(rid.encode(), made_up.encode())
        return value.replace(rid, made_up) if isinstance(value, str) else value

    real = client.request(method, path, headers=headers, content=content)
    missing = client.request(method, other(path), headers=headers, content=other(content))
    assert real.status_code == missing.status_code == status, (path, real.status_code, real.text, missing.text)
    assert other(real.content) == missing.content, (real.text, missing.text)
    shown = {k.lower(): other(v) for k, v in real.headers.items() if k.lower() not in VARYING}
    assert shown == {k.lower(): v for k, v in missing.headers.items() if k.lower() not in VARYING}, (path, shown)
    return real
