"""The daily reconciliation report: every payment and refund of a day (Asia/Ho_Chi_Minh) as CSV.

One row per payment (transfer or cash, matched or not, late ones with their refund task) and
per refund, then totals per channel. Rows are read by the day key each record carries at the
top level (``day``), an equality FerretDB pushes down.
"""

from __future__ import annotations

import csv
import io
from datetime import date
from typing import Any

from pymongo.database import Database

from .payments import PAYMENTS, REFUND_TASKS, REFUNDS, iso

COLUMNS = ["kind", "time", "id", "provider", "channel", "invoice", "facility", "amount", "matched",
           "outcome", "reference", "cashier", "shift", "note"]


def rows(db: Database, day: date, facility: str | None = None) -> list[dict[str, Any]]:
    query: dict[str, Any] = {"day": day.isoformat()}
    if facility:
        query["facility"] = facility
    out: list[dict[str, Any]] = []
    tasks = {t["_id"]: t for t in db[REFUND_TASKS].find({}, {"reason": 1})}
    found = {p["_id"]: p for p in db[PAYMENTS].find(query, {"outbox": 0})}
    if facility:
        # and the day's transfers that named no invoice but reached this facility's account (its
        # unmatched queue's, waiting or assigned since): the money its bank statement shows
        found.update((p["_id"], p) for p in db[PAYMENTS].find({"day": day.isoformat(), "queue_facility": facility},
                                                             {"outbox": 0}))
    for p in sorted(found.values(), key=lambda p: p["received_at"]):
        task = tasks.get(p["_id"])
        out.append({"kind": "payment", "time": iso(p["received_at"]), "id": p["_id"], "provider": p["provider"],
                    "channel": p["channel"], "invoice": p.get("invoice") or p.get("late_invoice") or "",
                    "facility": p.get("facility") or p.get("queue_facility") or "", "amount": int(p["amount"]),
                    "matched": "yes" if p.get("matched") else "no", "outcome": p.get("outcome", ""),
                    "reference": p.get("reference") or "", "cashier": p.get("cashier", ""),
                    "shift": p.get("shift", ""),
                    "note": (f"refund task: {task['reason']}" if task else
                             f"assigned from {p['assigned_from']}" if p.get("assigned_from") else "")})
    for r in sorted(db[REFUNDS].find(query), key=lambda r: r["at"]):
        out.append({"kind": "refund", "time": iso(r["at"]), "id": r["_id"], "provider": "cashier",
                    "channel": r.get("channel", ""), "invoice": r.get("invoice") or "",
                    "facility": r.get("facility") or "", "amount": -int(r["amount"]), "matched": "",
                    "outcome": "refunded", "reference": "", "cashier": r.get("cashier", ""),
                    "shift": r.get("shift") or "", "note": r.get("reason", "")})
    return out


def totals(report: list[dict[str, Any]]) -> dict[str, int]:
    pays = [r for r in report if r["kind"] == "payment"]
    # an assignment re-counts an unmatched transfer: count the money once (the original's row)
    money = [r for r in pays if not str(r["id"]).startswith("assign:")]
    return {
        "transfers": sum(r["amount"] for r in money if r["channel"] == "transfer"),
        "cash": sum(r["amount"] for r in money if r["channel"] == "cash"),
        "refunds": -sum(r["amount"] for r in report if r["kind"] == "refund"),
        "unmatched": sum(r["amount"] for r in pays if r["outcome"] == "unmatched"),
        "net": sum(r["amount"] for r in money) + sum(r["amount"] for r in report if r["kind"] == "refund"),
        "payments": len(money),
    }


def to_csv(day: date, report: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\r\n")
    writer.writeheader()
    writer.writerows(report)
    for key, value in totals(report).items():
        writer.writerow({"kind": "total", "time": day.isoformat(), "id": key, "amount": value})
    return buf.getvalue()
