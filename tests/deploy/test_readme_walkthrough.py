"""The billing README's 'Watch an invoice turn paid' walkthrough names a cashier token that reads the demo
invoice: a cashier token naming no facility is answered 404 for every invoice (run against ``make run``'s
seeds, the README's plain ``make token ROLE=cashier`` read nothing)."""

from __future__ import annotations

import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_walkthroughs_cashier_token_names_the_demo_cashiers_facility() -> None:
    text = (ROOT / "services/billing/README.md").read_text(encoding="utf-8")
    section = text.split("### Watch an invoice turn paid", 1)[1].split("\n### ", 1)[0]
    tokens = re.findall(r"make token ROLE=cashier[^`]*", section)
    assert tokens, "the walkthrough names no cashier token"
    demo = json.loads((ROOT / "deploy/local/demo-province.json").read_text(encoding="utf-8"))
    facility = demo["bank"]["facility"]  # the demo cashier's station, whose queue and invoices the walkthrough uses
    for token in tokens:
        assert f'TOKEN_ARGS="--facility {facility}"' in token, token
