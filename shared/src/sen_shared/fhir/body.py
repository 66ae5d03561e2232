"""A resource body as the store keeps it: its compact JSON text in the document's ``res``.

See store.py for why a text and not a sub-document. Own module so the search code can
unpack what it fetched without importing the store.
"""

from __future__ import annotations

import json
from typing import Any


def pack(resource: dict[str, Any] | None) -> str | None:
    """A resource body as stored: its compact JSON text (None stays None: a deletion)."""
    return None if resource is None else json.dumps(resource, ensure_ascii=False, separators=(",", ":"))


def unpack(doc: dict[str, Any] | None) -> dict[str, Any] | None:
    """``doc`` (a fetched document, or None) with its body parsed back, in place.

    A body an earlier version stored as a sub-document passes through as it is.
    """
    if doc is not None:
        res = doc.get("res")
        if isinstance(res, str):
            doc["res"] = json.loads(res)
    return doc
