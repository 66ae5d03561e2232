"""``infra.sh tune``: what it does to the local FerretDB's PostgreSQL tables (MongoDB has no such step)."""

from __future__ import annotations

import subprocess

import pytest

from tests.conftest import INFRA


def psql(sql: str) -> list[list[str]]:
    out = subprocess.run(["bash", str(INFRA), "psql", "-F", "\t", "-c", sql], capture_output=True, text=True,
                         timeout=60)
    if out.returncode == 3:
        pytest.skip("no local PostgreSQL under the MongoDB URL")
    assert out.returncode == 0, out.stderr
    return [line.split("\t") for line in out.stdout.splitlines() if line]


def test_tune_indexes_the_declared_fields_and_spares_the_audit_trail_frequent_autovacuum(fresh_db):
    fresh_db.AuditEvent.insert_one({"_id": "a-1", "sp_patient": ["Patient/p-1"]})
    fresh_db.AuditEvent.create_index("sp_patient")
    fresh_db.Patient.insert_one({"_id": "p-1", "sp_name": ["an"]})
    fresh_db.Patient.create_index("sp_name")
    subprocess.run(["bash", str(INFRA), "tune", fresh_db.name], check=True, timeout=600)

    schema = fresh_db.name
    tables = dict(psql(f"SELECT _jsonb->>'_id', _jsonb->>'table' FROM \"{schema}\"._ferretdb_database_metadata"))
    options = dict(psql(f"SELECT c.relname, coalesce(array_to_string(c.reloptions, ','), '') FROM pg_class c "
                        f"JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = '{schema}' "
                        f"AND c.relkind = 'r'"))
    assert set(options[tables["AuditEvent"]].split(",")) == {
        "autovacuum_analyze_scale_factor=0.5", "autovacuum_vacuum_insert_scale_factor=0.5"}
    assert options[tables["Patient"]] == ""  # updated tables keep PostgreSQL's defaults
    gin = psql(f"SELECT tablename, indexdef FROM pg_indexes WHERE schemaname = '{schema}' AND indexdef LIKE '%gin%'")
    assert any(t == tables["AuditEvent"] and "'sp_patient'" in d for t, d in gin)
    assert any(t == tables["Patient"] and "'sp_name'" in d for t, d in gin)


def test_tune_tunes_each_database_apart_and_fails_loudly_for_one_it_cannot(fresh_db, mongo_client):
    """One transaction a database: a database tune cannot finish (here its metadata names a table that is
    gone) makes tune exit non-zero naming it, and the others are tuned all the same. A single transaction
    over every database once failed whole past PostgreSQL's lock table and psql still exited 0, so the
    benches ran on untuned tables for a session."""
    other = mongo_client[fresh_db.name + "_b"]
    for db in (fresh_db, other):
        db.Patient.insert_one({"_id": "p-1", "sp_name": ["an"]})
        db.Patient.create_index("sp_name")
    schema = fresh_db.name
    table = dict(psql(f"SELECT _jsonb->>'_id', _jsonb->>'table' FROM \"{schema}\"._ferretdb_database_metadata"))[
        "Patient"]
    psql(f'ALTER TABLE "{schema}"."{table}" RENAME TO "{table}_gone"')
    try:
        out = subprocess.run(["bash", str(INFRA), "tune", fresh_db.name, other.name], capture_output=True,
                             text=True, timeout=600)
        assert out.returncode != 0
        assert f"tune failed for: {fresh_db.name}" in out.stderr
        gin = psql(f"SELECT indexdef FROM pg_indexes WHERE schemaname = '{other.name}' AND indexdef LIKE '%gin%'")
        assert any("'sp_name'" in d for (d,) in gin)
    finally:
        psql(f'ALTER TABLE "{schema}"."{table}_gone" RENAME TO "{table}"')
        mongo_client.drop_database(other.name)
