"""What the cashier page suites share: billing faked as its JSON API answers the shift page
(specs/billing.yaml), every call it was sent kept; billing's daily CSV as the portal downloads it."""

from __future__ import annotations

from typing import Any

from sen_portal.web.backend import BackendError

SHIFT = "6a9973cce7f043af"


class ShiftBilling:
    """billing's JSON answers (``cashier._json``): the open shift (opened 07:00 with ``opening_cash``, its
    ``expected`` totals) or, once ``shift_open`` is False, "no shift is open"; no earlier shifts; the close
    (:meth:`closed`, or ``close_refusal`` raised); :meth:`other` for the rest."""

    opening_cash = 0

    def __init__(self, expected: dict[str, int]) -> None:
        self.sent: list[tuple[str, str, Any]] = []
        self.shift_open = True
        self.expected = expected
        self.close_refusal: BackendError | None = None

    def __call__(self, method, path, body=None, params=None, key=None):  # noqa: ANN001, ANN204 - as cashier._json
        self.sent.append((method, path, body))
        if (method, path) == ("GET", "/payments/shifts/current"):
            if not self.shift_open:
                raise BackendError("refused", "billing", 404, "no shift is open")
            return {"id": SHIFT, "openedAt": "2026-12-05T07:00:00+07:00", "openingCash": self.opening_cash,
                    "expected": self.expected}
        if (method, path) == ("GET", "/payments/shifts"):
            return {"shifts": []}
        if path == "/payments/shifts/current/close":
            if self.close_refusal is not None:
                raise self.close_refusal
            return self.closed(body)
        return self.other(method, path, body)

    def closed(self, body: dict[str, Any]) -> dict[str, Any]:
        """billing's answer to a close that went through: the expected totals, the counted ones as sent, the
        difference between them, the note."""
        expected = {k: self.expected[k] for k in ("cash", "transfers")}
        counted = {"cash": body["countedCash"], "transfers": body["countedTransfers"]}
        return {"id": SHIFT, "state": "closed", "expected": expected, "counted": counted,
                "difference": {k: counted[k] - expected[k] for k in expected}, "note": body.get("note", "")}

    def other(self, method: str, path: str, body: Any) -> Any:
        """billing's answer to any other call: an empty object."""
        return {}

    def posted(self) -> list[tuple[str, str, Any]]:
        return [s for s in self.sent if s[0] == "POST"]


def daily_csv_from_billing(monkeypatch, body: bytes, org_names: dict[str, str]) -> None:  # noqa: ANN001
    """billing answers the daily report's download with ``body`` (its CSV), and the directory names the
    facilities ``org_names`` (``{}``: it cannot, as when the EHR refuses a cashier's Organization reads)."""
    from sen_portal.web import daily_report, directory

    class Answer:
        content = body

    monkeypatch.setattr(daily_report, "call", lambda *a, **k: Answer())
    monkeypatch.setattr(directory, "org_names", lambda: org_names)
