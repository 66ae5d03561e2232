"""A cashier's billing search includes nothing, ``:iterate`` or not (real FerretDB).

Security review (session 28): billing refuses ``_include`` and ``_revinclude`` to cashiers (400), since it does
not filter included resources by facility; the check looked for those two names only, so ``_include:iterate``
and ``_revinclude:iterate`` were served (200 with the included entries). Billing's own writes keep a charge on
its facility's account, so no other facility's record was found that way: the rule now holds as written.
"""

from __future__ import annotations

import uuid

import pytest
from sen_shared.auth import issue_dev_token

from tests.billing_support import BANK, billing_app, fhir_admin, hand_invoice

pytestmark = pytest.mark.integration


def _cashier(dev_key, facility: str) -> dict[str, str]:  # noqa: ANN001 - the dev signing key
    tok = issue_dev_token(dev_key, "cashier", sub=f"thu-ngan-{facility}-{uuid.uuid4().hex[:6]}", facility=facility)
    return {"Authorization": f"Bearer {tok}", "Content-Type": "application/json", "Accept": "application/json"}


def test_a_cashiers_search_with_an_iterated_include_is_refused_as_a_plain_one(
        base_env, mongo_client, monkeypatch, dev_key) -> None:
    with billing_app(base_env, mongo_client, monkeypatch, "incl", BANK) as (client, _db):
        a, admin = _cashier(dev_key, "org-a"), fhir_admin(dev_key)
        _draft, items = hand_invoice(client, a, f"Patient/p-{uuid.uuid4().hex[:6]}", ["kham-benh"])
        account = client.get(f"/fhir/ChargeItem/{items[0]}", headers=a).json()["account"][0]["reference"]
        aid = account.split("/")[1]
        for query in (f"Account?_id={aid}&_revinclude=ChargeItem:account",
                      f"Account?_id={aid}&_revinclude:iterate=ChargeItem:account",
                      f"ChargeItem?_id={items[0]}&_include:iterate=ChargeItem:account"):
            r = client.get(f"/fhir/{query}", headers=a)
            assert r.status_code == 400, (query, r.status_code, r.text)
            outcome = r.json()
            assert outcome["resourceType"] == "OperationOutcome"
            assert "not served to cashiers" in outcome["issue"][0]["diagnostics"]
        # an admin's search includes
        r = client.get(f"/fhir/Account?_id={aid}&_revinclude:iterate=ChargeItem:account", headers=admin)
        assert r.status_code == 200 and items[0] in r.text, r.text
