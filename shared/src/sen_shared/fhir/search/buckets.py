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
import math
from collections.abc import Callable, Hashable
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


def plan_step(pos: int, left: int, hits: float, scanned: int) -> tuple[dict[str, Any], list[dict[str, Any]], int]:
    """The next step of a walk at bucket ``pos``: ``(equalities, conditions, buckets covered)``.

    ``left`` matches are still wanted; ``hits`` were found in the ``scanned`` buckets read so far.
    A step decodes every candidate of the buckets it reads, so it plans with a pessimistic rate:
    the matches per bucket seen so far plus about one standard deviation of a count that small
    (``(hits + sqrt(hits) + .5) / scanned``; dense before the first step). A bucket that
    happened to hold one match then does not send the next step over sixteen buckets of a
    filter that has three in each, and no match in sixteen buckets still finishes in one more
    query; when the estimate holds, a step decodes about ``left + SLACK`` documents at most.
    """
    rate = (hits + math.sqrt(hits) + 0.5) / scanned if scanned else float(BUCKETS)
    rest = BUCKETS - pos
    budget = left + SLACK
    if rate * BUCKETS <= budget:  # the whole remainder in one query (it decodes every match)
        return {}, [{FINE: {"$gte": _hex(pos)}}] if pos else [], rest
    for size, field, value in GROUPS:  # the rest of the largest group the budget allows
        if rate * size <= budget:
            conds = [{FINE: {"$gte": _hex(pos)}}] if pos % size else []
            return {field: value(pos)}, conds, size - pos % size
    return {FINE: _hex(pos)}, [], 1


Find = Callable[[dict[str, Any], list[dict[str, Any]], int], list[dict[str, Any]]]

# Matches per bucket that walks of a filter met, per process: the next walk of the same filter
# (the next page, the next nurse typing "nguyen") starts with the right step instead of a probe.
_density: dict[Hashable, float] = {}
DENSITY_CACHE_SIZE = 4096


def start_bucket(value: Any) -> int | None:
    """The bucket a page cursor's first value names (two hex digits), or None when it is not one."""
    if value is None:  # a document from before the buckets: from the start
        return 0
    if isinstance(value, str) and len(value) == 2 and all(c in "0123456789abcdef" for c in value):
        return int(value, 16)
    return None


def _covered(found: list[dict[str, Any]], pos: int, span: int) -> int:
    """Buckets a step that filled its limit read up to its last match (sorted by bucket)."""
    last = start_bucket(found[-1].get(FINE)) if found else None
    return span if last is None or not pos <= last < pos + span else last - pos + 1


def walk(find: Find, want: int, first: int = 0, *, density_key: Hashable | None = None) -> list[dict[str, Any]]:
    """Up to ``want`` matches in ``(b2, _id)`` order from bucket ``first`` on.

    ``find(equalities, conditions, limit)`` runs one step: the search's filter AND the step's
    equalities (pushed down) AND its conditions, sorted by ``DEFAULT_SORT``, at most ``limit``.
    Each step adds to what is known of the density: all the buckets it read, or, when it filled
    its limit, the buckets up to its last match (a page filled by the first three buckets of a
    group of sixteen says three a bucket, not the sixteenth of it).
    """
    docs: list[dict[str, Any]] = []
    known = _density.get(density_key) if density_key is not None else None
    hits, scanned = (known * 4, 4) if known is not None else (0.0, 0)  # as if 4 buckets were read
    seen_hits = seen_buckets = 0
    pos = first
    while pos < BUCKETS and len(docs) < want:
        limit = want - len(docs)
        equalities, conds, span = plan_step(pos, limit, hits, scanned)
        found = find(equalities, conds, limit)
        docs += found
        covered = span if len(found) < limit else _covered(found, pos, span)
        hits += len(found)
        scanned += covered
        seen_hits += len(found)
        seen_buckets += covered
        pos += span
    if density_key is not None and seen_buckets:
        if len(_density) >= DENSITY_CACHE_SIZE:
            _density.clear()
        _density[density_key] = seen_hits / seen_buckets
    return docs


__all__ = ["BUCKETS", "COARSE", "DEFAULT_SORT", "FINE", "MIDDLE", "bucket", "bucket_fields", "plan_step",
           "start_bucket", "walk"]
