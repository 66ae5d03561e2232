"""The daily reconciliation report from the command line (and the Kubernetes CronJob):

    python -m sen_billing.report                      # yesterday (Asia/Ho_Chi_Minh), every facility
    python -m sen_billing.report --day 2025-03-14 --facility org-a --out report.csv

Writes the CSV (``domain.reconciliation``) to ``--out`` or standard output, and keeps a copy in
``reconciliation_reports`` under ``<day>/<facility or all>`` (inserted once: a second run of the
same day does not replace the first one's copy; the CSV it prints is always fresh). With ``--out``
it logs one JSON line saying what it kept (the CronJob's way: the CSV's rows, with cashiers' names and
refund reasons, stay out of the cluster's logs).
"""

from __future__ import annotations

import argparse
import sys
from datetime import date, datetime, timedelta

from sen_shared.claims import claim_once

from .domain import reconciliation
from .domain.payments import VN

REPORTS = "reconciliation_reports"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sen_billing.report", description=__doc__.splitlines()[0])
    parser.add_argument("--day", help="YYYY-MM-DD (default: yesterday in Asia/Ho_Chi_Minh)")
    parser.add_argument("--facility", help="one facility's Organization id (default: all)")
    parser.add_argument("--out", help="file to write (default: standard output)")
    args = parser.parse_args(argv)
    try:
        day = date.fromisoformat(args.day) if args.day else datetime.now(VN).date() - timedelta(days=1)
    except ValueError:
        parser.error("--day must be YYYY-MM-DD")
    from sen_shared import mongo

    from .config import settings_from_env

    settings = settings_from_env()
    db = mongo.database(settings.mongo_url, settings.db_name)
    rows = reconciliation.rows(db, day, args.facility, account_facilities=settings.account_facilities)
    text = reconciliation.to_csv(day, rows, settings.facility_names)
    claim_once(db[REPORTS], f"{day.isoformat()}/{args.facility or 'all'}",
               {"day": day.isoformat(), "facility": args.facility, "csv": text, "rows": len(rows)})
    if args.out:
        with open(args.out, "w", encoding="utf-8", newline="") as f:
            f.write(text)
        import logging

        from sen_shared.logs import setup_logging

        setup_logging(f"{settings.service}-report", settings.log_level)
        logging.getLogger("sen.billing.report").info(
            "reconciliation report kept", extra={"day": day.isoformat(), "facility": args.facility or "all",
                                                 "rows": len(rows), "collection": REPORTS})
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
