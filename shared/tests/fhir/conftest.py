"""Fixtures for the FHIR search tests: a throwaway database on the live FerretDB/MongoDB."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import pytest

MONGO_URL = os.environ.get("MONGO_URL", "mongodb://127.0.0.1:27017/")
EXAMPLES = Path(__file__).resolve().parents[3] / ".sen/fhir/hl7.fhir.r4.examples/package"


@pytest.fixture(scope="module")
def db():
    pymongo = pytest.importorskip("pymongo")
    client = pymongo.MongoClient(MONGO_URL, serverSelectionTimeoutMS=3000, tz_aware=False)
    try:
        client.admin.command("ping")
    except pymongo.errors.PyMongoError as exc:  # pragma: no cover - depends on the machine
        pytest.skip(f"no MongoDB-wire server at {MONGO_URL}: {exc}")
    name = f"sen_searchtest_{secrets.token_hex(4)}"
    yield client[name]
    client.drop_database(name)
    client.close()
