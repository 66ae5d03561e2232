"""Fixtures of the integration suite started once per session for several modules."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest


@contextmanager
def _ehr_and_teleconsult(base_env: dict[str, str], run_id: str, name: str, tmp_path_factory: Any,
                         mongo_client: Any) -> Iterator[dict[str, str]]:
    """An EHR and a teleconsult web process (gunicorn) on databases of their own (``sen_t<run>_<name>_ehr``,
    ``…_tc``), teleconsult reading that EHR: ``{"ehr": URL, "ehr_db": name, "tc": URL, "tc_db": name}``; the
    databases are dropped after."""
    from tests.support import web_process

    ehr_db, tc_db = f"sen_t{run_id}_{name}_ehr", f"sen_t{run_id}_{name}_tc"
    logs = tmp_path_factory.mktemp(name)
    try:
        with web_process("ehr", {**base_env, "SEN_DB": ehr_db}, logs / "ehr.log") as ehr, \
                web_process("teleconsult", {**base_env, "SEN_DB": tc_db, "SEN_EHR_URL": ehr,
                                            "SEN_HTTP_TIMEOUT": "10"}, logs / "tc.log") as tc:
            yield {"ehr": ehr, "ehr_db": ehr_db, "tc": tc, "tc_db": tc_db}
    finally:
        mongo_client.drop_database(ehr_db)
        mongo_client.drop_database(tc_db)


@pytest.fixture(scope="session")
def consult_services(base_env, run_id, tmp_path_factory, mongo_client):
    """The EHR and teleconsult web processes of the consult page modules (consult_stack), started once. Each
    module on them empties both databases and seeds its EHR first (consult_stack.ehr)."""
    with _ehr_and_teleconsult(base_env, run_id, "cs", tmp_path_factory, mongo_client) as services:
        yield services


@pytest.fixture(scope="session")
def takeover_services(base_env, run_id, tmp_path_factory, mongo_client):
    """The EHR and teleconsult web processes of the take-over modules (test_portal_consult_takeover,
    test_portal_worklist_pages, test_portal_minutes_meanwhile), started once; apart from consult_services,
    whose clinic has a district that teleconsult keeps per process. Each module empties both databases and
    seeds its EHR first (test_portal_consult_takeover.ehr)."""
    with _ehr_and_teleconsult(base_env, run_id, "tk", tmp_path_factory, mongo_client) as services:
        yield services


@pytest.fixture(scope="session")
def cashier_services(base_env, run_id, tmp_path_factory, mongo_client):
    """The EHR and billing web processes of the cashier page modules (test_portal_cashier_*), started once: billing
    with the demo bank account, given to the demo clinic, whose name it prints (billing_support.CASHIER_BANK).
    Each module empties both databases and seeds them first (billing_support.cashier_ehr, cashier_billing):
    ``{"ehr": URL, "ehr_db": name, "billing": URL, "billing_db": name}``; the databases are dropped after."""
    from tests.billing_support import CASHIER_BANK
    from tests.support import web_process

    ehr_db, billing_db = f"sen_t{run_id}_cash_ehr", f"sen_t{run_id}_cash_billing"
    logs = tmp_path_factory.mktemp("cash")
    try:
        with web_process("ehr", {**base_env, "SEN_DB": ehr_db}, logs / "ehr.log") as ehr, \
                web_process("billing", {**base_env, **CASHIER_BANK, "SEN_DB": billing_db},
                            logs / "billing.log") as billing:
            yield {"ehr": ehr, "ehr_db": ehr_db, "billing": billing, "billing_db": billing_db}
    finally:
        mongo_client.drop_database(ehr_db)
        mongo_client.drop_database(billing_db)


@pytest.fixture(scope="session")
def tcc_services(base_env, run_id, tmp_path_factory, mongo_client):
    """The EHR and teleconsult web processes of test_teleconsult_consults and the modules on its fixtures
    (test_consult_secretary, test_teleconsult_messages, test_teleconsult_takeover; test_teleconsult_visit_close
    on the EHR alone), started once where each module started both. Teleconsult has that module's settings
    (test_teleconsult_consults.teleconsult_env). Each module empties both databases and seeds its EHR first
    (test_teleconsult_consults.ehr): ``{"ehr": URL, "ehr_db": name, "tc": URL, "tc_db": name}``; the databases
    are dropped after."""
    from tests.integration.test_teleconsult_consults import teleconsult_env
    from tests.support import web_process

    ehr_db, tc_db = f"sen_t{run_id}_tcc_ehr", f"sen_t{run_id}_tcc"
    logs = tmp_path_factory.mktemp("tcc")
    try:
        with web_process("ehr", {**base_env, "SEN_DB": ehr_db}, logs / "ehr.log") as ehr, \
                web_process("teleconsult", teleconsult_env(base_env, tc_db, ehr), logs / "tc.log",
                            WEB_CONCURRENCY="1") as tc:
            yield {"ehr": ehr, "ehr_db": ehr_db, "tc": tc, "tc_db": tc_db}
    finally:
        mongo_client.drop_database(ehr_db)
        mongo_client.drop_database(tc_db)


@pytest.fixture(scope="session")
def visit_services(base_env, run_id, tmp_path_factory, mongo_client):
    """The EHR and teleconsult web processes of test_portal_visit_changes and test_portal_consult_minutes (its
    fixtures), started once where each module started both; teleconsult with that module's settings
    (test_portal_visit_changes.teleconsult_env). Each module empties both databases, seeds its EHR and puts the
    doctor's Schedule first (test_portal_visit_changes.ehr, tc): ``{"ehr": URL, "ehr_db": name, "tc": URL,
    "tc_db": name}``; the databases are dropped after."""
    from tests.integration.test_portal_visit_changes import teleconsult_env
    from tests.support import web_process

    ehr_db, tc_db = f"sen_t{run_id}_pvc_ehr", f"sen_t{run_id}_pvc_tc"
    logs = tmp_path_factory.mktemp("pvc")
    try:
        with web_process("ehr", {**base_env, "SEN_DB": ehr_db}, logs / "ehr.log") as ehr, \
                web_process("teleconsult", teleconsult_env(base_env, tc_db, ehr), logs / "tc.log") as tc:
            yield {"ehr": ehr, "ehr_db": ehr_db, "tc": tc, "tc_db": tc_db}
    finally:
        mongo_client.drop_database(ehr_db)
        mongo_client.drop_database(tc_db)
