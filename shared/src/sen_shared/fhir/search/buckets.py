"""Id buckets: the default search order, and how a broad search reads only the page it returns.

FerretDB 1.24 pushes down only top-level equalities and evaluates every sort
and every range itself, after decoding each candidate document (about a
millisecond for a Patient). A broad search, ``Patient?name=nguyen`` in a
province where a third of the people are Nguyễn, would decode thousands of
documents to return twenty.

So every resource document carries three small fields derived from its id:
``b2``, two hex digits of a hash of the id (256 buckets); ``b4``, the group
of four buckets it falls in (64 groups); and ``b1``, the first hex digit (16
groups of 16). The default order of a search (no ``_sort``) is
``(b2, _id)``: a stable order of its own that a search can walk bucket by
bucket, each step an equality FerretDB pushes down (``{..., "b2": "3f"}``),
so it decodes only the candidates of the buckets it reads. How many buckets
a step reads adapts to how dense the matches were so far: a sparse search
finishes in two or three queries, a dense one reads one bucket at a time
until the page is full. On MongoDB the compound index ``(b2, _id)`` serves
the same walk.
"""

from __future__ import annotations

import hashlib
from typing import Any

BUCKETS = 256
FINE = "b2"
COARSE = "b1"
MIDDLE = "b4"
DEFAULT_SORT: list[tuple[str, int]] = [(FINE, 1), ("_id", 1)]
SLACK = 8  # matches a step may decode beyond what the page still needs


def bucket(rid: str) -> str:
    """Two hex digits of a hash of ``rid``: spreads any id set evenly over 256 buckets."""
    return hashlib.blake2b(rid.encode(), digest_size=1).hexdigest()


def bucket_fields(rid: str) -> dict[str, str]:
    b = bucket(rid)
    return {FINE: b, MIDDLE: f"{int(b, 16) // 4:02x}", COARSE: b[0]}


def _hex(pos: int) -> str:
    return f"{pos:02x}"


# the groups a step can read with one pushed-down equality: (buckets, field, its value at pos)
GROUPS = ((16, COARSE, lambda pos: f"{pos // 16:x}"), (4, MIDDLE, lambda pos: f"{pos // 4:02x}"))


def plan_step(pos: int, left: int, hits: int, scanned: int) -> tuple[dict[str, Any], list[dict[str, Any]], int]:
    """The next step of a walk at bucket ``pos``: ``(equalities, conditions, buckets covered)``.

    ``left`` matches are still wanted; ``hits`` were found in the ``scanned`` buckets read so far.
    The estimate of matches per bucket is pessimistic (``(hits + .5) / scanned``, or dense before
    the first step), so a step decodes about ``left + SLACK`` documents at most when the estimate
    holds.
    """
    rate = (hits + 0.5) / scanned if scanned else float(BUCKETS)
    rest = BUCKETS - pos
    budget = left + SLACK
    if rate * BUCKETS <= budget:  # the whole remainder in one query (it decodes every match)
        return {}, [{FINE: {"$gte": _hex(pos)}}] if pos else [], rest
    for size, field, value in GROUPS:  # the rest of the largest group the budget allows
        if rate * size <= budget:
            conds = [{FINE: {"$gte": _hex(pos)}}] if pos % size else []
            return {field: value(pos)}, conds, size - pos % size
    return {FINE: _hex(pos)}, [], 1

__all__ = ["BUCKETS", "COARSE", "DEFAULT_SORT", "FINE", "MIDDLE", "bucket", "bucket_fields", "plan_step"]
