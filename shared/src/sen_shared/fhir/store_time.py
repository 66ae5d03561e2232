"""Timestamps of stored versions: UTC, millisecond precision (what MongoDB keeps)."""

from __future__ import annotations

from datetime import UTC, datetime


def now() -> datetime:
    """UTC now at millisecond precision, so ``lu`` and ``meta.lastUpdated`` agree after a round trip."""
    t = datetime.now(UTC)
    return t.replace(microsecond=t.microsecond // 1000 * 1000)


def iso(dt: datetime) -> str:
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
