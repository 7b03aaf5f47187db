"""The shop's HTTP API fuzzed from its own OpenAPI schema: no input makes it answer a 5xx.

schemathesis generates requests (valid and invalid) for every operation the schema
documents; each backend gets a fresh database. The run is bounded and deterministic:
a fixed number of examples per operation, derandomised, no shrinking, under a timeout.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from examples.shop import api
from examples.shop.api import create_app
from fastapi import FastAPI
from hypothesis import HealthCheck, Phase, settings
from schemathesis.python.asgi import shutdown_lifespans

from tests.conftest import POSTGRES_DSN, require_service, unique_name
from tests.examples.conftest import drop_postgres_schema

EXAMPLES_PER_OPERATION = 30


# The schema is the app's own; building it connects to no database.
schema = schemathesis.openapi.from_dict(api.app.openapi())


@pytest.fixture(params=["sqlite", "postgres"])
def shop_app(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[FastAPI]:
    """The shop's HTTP API on a fresh database of each SQL backend."""
    schema_name = None
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'shop.db'}"
    else:
        require_service("postgres")
        schema_name = unique_name("fuzz")
        url = f"{POSTGRES_DSN}?schema={schema_name}"
    try:
        yield create_app(url)
    finally:
        # schemathesis starts the app's lifespan once and keeps it; end it with the test.
        shutdown_lifespans()
        if schema_name is not None:
            asyncio.run(drop_postgres_schema(schema_name))


@pytest.mark.timeout(600)
@schema.parametrize()
@settings(
    max_examples=EXAMPLES_PER_OPERATION,
    derandomize=True,
    database=None,
    deadline=None,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.filter_too_much,
        HealthCheck.function_scoped_fixture,
    ],
)
def test_no_request_makes_the_shop_answer_a_server_error(case: Any, shop_app: FastAPI) -> None:
    response = case.call(app=shop_app)
    assert response.status_code < 500, (
        f"{response.status_code} {response.text[:500]}\n{case.as_curl_command()}"
    )
