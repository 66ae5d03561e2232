"""Print a development bearer token for a role, and nothing else.

    python -m sen_shared.devtoken doctor [--facility ORG_ID] [--practitioner ID] [--ttl SECONDS]

Uses SEN_DEV_JWT_KEY (default .sen/dev-jwt.pem), SEN_JWT_ISSUER, SEN_JWT_AUDIENCE.
"""

from __future__ import annotations

import argparse
import os
import sys

from .auth import ROLES, issue_dev_token


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="sen-token", description=__doc__.splitlines()[0])
    ap.add_argument("role", choices=sorted(ROLES))
    ap.add_argument("--facility")
    ap.add_argument("--practitioner")
    ap.add_argument("--sub")
    ap.add_argument("--scope")
    ap.add_argument("--ttl", type=int, default=8 * 3600)
    a = ap.parse_args(argv)
    extra = {k: v for k, v in (("facility", a.facility), ("practitioner", a.practitioner),
                               ("sub", a.sub), ("scope", a.scope)) if v}
    sys.stdout.write(issue_dev_token(
        os.environ.get("SEN_DEV_JWT_KEY") or ".sen/dev-jwt.pem", a.role,
        issuer=os.environ.get("SEN_JWT_ISSUER", "sen-dev"),
        audience=os.environ.get("SEN_JWT_AUDIENCE", "sen"), ttl_seconds=a.ttl, **extra) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
