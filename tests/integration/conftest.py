"""Fixtures of the integration suite started once per session for several modules."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest


@pytest.fixture(scope="session")
def shared_ehr(base_env, run_id, tmp_path_factory, mongo_client):
    """The EHR web process (gunicorn, the default settings) under every session-wide stack below (consult,
    take-over, cashier, teleconsult's consults, visit changes), started once where each stack started one: a
    module on any of them empties its database and seeds it first, as it does its stack's other databases.
    ``{"ehr": URL, "ehr_db": name}``; the database is dropped after."""
    from tests.support import web_process

    ehr_db = f"sen_t{run_id}_ehr"
    try:
        with web_process("ehr", {**base_env, "SEN_DB": ehr_db}, tmp_path_factory.mktemp("ehr") / "ehr.log") as ehr:
            yield {"ehr": ehr, "ehr_db": ehr_db}
    finally:
        mongo_client.drop_database(ehr_db)


@contextmanager
def _ehr_and_teleconsult(base_env: dict[str, str], run_id: str, name: str, tmp_path_factory: Any,
                         mongo_client: Any, shared_ehr: dict[str, str]) -> Iterator[dict[str, str]]:
    """A teleconsult web process (gunicorn) on a database of its own (``sen_t<run>_<name>_tc``) reading the
    session's EHR (``shared_ehr``): ``{"ehr": URL, "ehr_db": name, "tc": URL, "tc_db": name}``; teleconsult's
    database is dropped after."""
    from tests.support import web_process

    tc_db = f"sen_t{run_id}_{name}_tc"
    logs = tmp_path_factory.mktemp(name)
    try:
        with web_process("teleconsult", {**base_env, "SEN_DB": tc_db, "SEN_EHR_URL": shared_ehr["ehr"],
                                          "SEN_HTTP_TIMEOUT": "10"}, logs / "tc.log") as tc:
            yield {**shared_ehr, "tc": tc, "tc_db": tc_db}
    finally:
        mongo_client.drop_database(tc_db)


@pytest.fixture(scope="session")
def consult_services(base_env, run_id, tmp_path_factory, mongo_client, shared_ehr):
    """The EHR (shared_ehr) and teleconsult web processes of the consult page modules (consult_stack), started
    once. Each module on them empties both databases and seeds its EHR first (consult_stack.ehr)."""
    with _ehr_and_teleconsult(base_env, run_id, "cs", tmp_path_factory, mongo_client, shared_ehr) as services:
        yield services


@pytest.fixture(scope="session")
def takeover_services(base_env, run_id, tmp_path_factory, mongo_client, shared_ehr):
    """The EHR (shared_ehr) and teleconsult web processes of the take-over modules (test_portal_consult_takeover,
    test_portal_worklist_pages, test_portal_minutes_meanwhile), started once; apart from consult_services,
    whose clinic has a district that teleconsult keeps per process. Each module empties both databases and
    seeds its EHR first (test_portal_consult_takeover.ehr)."""
    with _ehr_and_teleconsult(base_env, run_id, "tk", tmp_path_factory, mongo_client, shared_ehr) as services:
        yield services


@pytest.fixture(scope="session")
def cashier_services(base_env, run_id, tmp_path_factory, mongo_client, shared_ehr):
    """The EHR (shared_ehr) and billing web processes of the cashier page modules (test_portal_cashier_*),
    started once: billing with the demo bank account, given to the demo clinic, whose name it prints
    (billing_support.CASHIER_BANK). Each module empties both databases and seeds them first
    (billing_support.cashier_ehr, cashier_billing): ``{"ehr": URL, "ehr_db": name, "billing": URL, "billing_db":
    name}``; billing's database is dropped after."""
    from tests.billing_support import CASHIER_BANK
    from tests.support import web_process

    billing_db = f"sen_t{run_id}_cash_billing"
    logs = tmp_path_factory.mktemp("cash")
    try:
        with web_process("billing", {**base_env, **CASHIER_BANK, "SEN_DB": billing_db},
                         logs / "billing.log") as billing:
            yield {**shared_ehr, "billing": billing, "billing_db": billing_db}
    finally:
        mongo_client.drop_database(billing_db)


@pytest.fixture(scope="session")
def tcc_services(base_env, run_id, tmp_path_factory, mongo_client, shared_ehr):
    """The EHR (shared_ehr) and teleconsult web processes of test_teleconsult_consults and the modules on its fixtures
    (test_consult_secretary, test_teleconsult_messages, test_teleconsult_takeover; test_teleconsult_visit_close
    on the EHR alone), started once where each module started both. Teleconsult has that module's settings
    (test_teleconsult_consults.teleconsult_env). Each module empties both databases and seeds its EHR first
    (test_teleconsult_consults.ehr): ``{"ehr": URL, "ehr_db": name, "tc": URL, "tc_db": name}``; teleconsult's
    database is dropped after."""
    from tests.integration.test_teleconsult_consults import teleconsult_env
    from tests.support import web_process

    tc_db = f"sen_t{run_id}_tcc"
    logs = tmp_path_factory.mktemp("tcc")
    try:
        with web_process("teleconsult", teleconsult_env(base_env, tc_db, shared_ehr["ehr"]), logs / "tc.log",
                         WEB_CONCURRENCY="1") as tc:
            yield {**shared_ehr, "tc": tc, "tc_db": tc_db}
    finally:
        mongo_client.drop_database(tc_db)


@pytest.fixture(scope="session")
def visit_services(base_env, run_id, tmp_path_factory, mongo_client, shared_ehr):
    """The EHR (shared_ehr) and teleconsult web processes of test_portal_visit_changes and
    test_portal_consult_minutes (its fixtures), started once where each module started both; teleconsult with
    that module's settings (test_portal_visit_changes.teleconsult_env). Each module empties both databases, seeds
    its EHR and puts the doctor's Schedule first (test_portal_visit_changes.ehr, tc): ``{"ehr": URL, "ehr_db":
    name, "tc": URL, "tc_db": name}``; teleconsult's database is dropped after."""
    from tests.integration.test_portal_visit_changes import teleconsult_env
    from tests.support import web_process

    tc_db = f"sen_t{run_id}_pvc_tc"
    logs = tmp_path_factory.mktemp("pvc")
    try:
        with web_process("teleconsult", teleconsult_env(base_env, tc_db, shared_ehr["ehr"]), logs / "tc.log") as tc:
            yield {**shared_ehr, "tc": tc, "tc_db": tc_db}
    finally:
        mongo_client.drop_database(tc_db)
