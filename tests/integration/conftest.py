"""Fixtures of the integration suite started once per session for several modules."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def consult_services(base_env, run_id, tmp_path_factory, mongo_client):
    """The EHR and teleconsult web processes (gunicorn) of the consult page modules (consult_stack), started
    once: ``{"ehr": URL, "ehr_db": name, "tc": URL, "tc_db": name}``. Each module on them empties both
    databases and seeds its EHR first (consult_stack.ehr); dropped at the end."""
    from tests.support import web_process

    ehr_db, tc_db = f"sen_t{run_id}_cs_ehr", f"sen_t{run_id}_cs_tc"
    logs = tmp_path_factory.mktemp("consult-stack")
    try:
        with web_process("ehr", {**base_env, "SEN_DB": ehr_db}, logs / "ehr.log") as ehr, \
                web_process("teleconsult", {**base_env, "SEN_DB": tc_db, "SEN_EHR_URL": ehr,
                                            "SEN_HTTP_TIMEOUT": "10"}, logs / "tc.log") as tc:
            yield {"ehr": ehr, "ehr_db": ehr_db, "tc": tc, "tc_db": tc_db}
    finally:
        mongo_client.drop_database(ehr_db)
        mongo_client.drop_database(tc_db)
