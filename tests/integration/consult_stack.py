"""The services and the portal of ``test_portal_consult_patients`` for the modules that test more consult pages
on them: a real EHR (and its database name) and teleconsult as gunicorn processes on loopback, the portal in
this process, and the autouse fixture that starts each test with no facility or doctor names kept.

``from tests.integration.consult_stack import *`` puts these fixtures in a module by name. The two processes
are the session's (``consult_services``, tests/integration/conftest.py): started once for every module on
this stack, not once per module. Each module starts from emptied databases seeded as
``test_portal_consult_patients``'s EHR (``ehr``), as it did on processes of its own; the portal (in process)
is the module's."""

import pytest

from tests.integration.test_portal_consult_patients import _names_from_this_ehr, ehr_seed, portal
from tests.support import emptied, put_resources

__all__ = ["_budget_unspent", "_names_from_this_ehr", "ehr", "ehr_db", "portal", "tc", "tc_db"]


@pytest.fixture(scope="module")
def ehr_db(consult_services):
    return consult_services["ehr_db"]


@pytest.fixture(scope="module")
def tc_db(consult_services):
    return consult_services["tc_db"]


@pytest.fixture(scope="module")
def ehr(consult_services, mongo_client, dev_key):
    """The session's EHR (its URL) with nothing from an earlier module in it or in teleconsult's database:
    the seed alone."""
    emptied(mongo_client, consult_services["ehr_db"], consult_services["tc_db"])
    put_resources(consult_services["ehr"], dev_key, ehr_seed())
    return consult_services["ehr"]


@pytest.fixture(scope="module")
def tc(consult_services, ehr):
    return consult_services["tc"]


@pytest.fixture(autouse=True)
def _budget_unspent(ehr, ehr_db, mongo_client):
    """Each test starts with the demo clinic nurse's take-on budget unspent: the wrong numbers an earlier test
    gave (a take-on, a registration meeting a number held elsewhere) count in the EHR for 15 minutes, and five
    of them made a later test's registration a 429 instead of the take-on form, depending on the order."""
    mongo_client[ehr_db]["take_on_failures"].delete_many({})
