"""The services and the portal of ``test_portal_consult_patients`` for the modules that test more consult pages
on them: a real EHR (and its database name) and teleconsult as gunicorn processes on loopback, the portal in
this process, and the autouse fixture that starts each test with no facility or doctor names kept.

``from tests.integration.consult_stack import *`` puts these fixtures in a module by name; their scope is the
module, so each module gets the stack started afresh."""

from tests.integration.test_portal_consult_patients import _names_from_this_ehr, ehr, ehr_db, portal, tc

__all__ = ["_names_from_this_ehr", "ehr", "ehr_db", "portal", "tc"]
