"""Schemathesis against the API's own /openapi.json: generated requests (valid and not) to
every operation; no response may be a 5xx, and every response must match the schema.

Runs on SQLite with the embedded broker, with data in place (an experiment with runs and
metrics) so that reads of existing resources are exercised too, and with a token set so the
401 path is part of the schema check; a second app also protects reads (PROTECT_READS), the
hardened deployment. Hypothesis keeps the example count bounded for CI.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis import checks

from server.api.app import create_app
from server.db.metrics import insert_points, series_ids
from server.db.migrate import upgrade
from server.db.models import Run
from server.db.session import make_engine, make_sessionmaker
from server.settings import Settings

TOKEN = "fuzz-token"


def _app(**extra):
    tmp = Path(__import__("tempfile").mkdtemp(prefix="landscope-fuzz-"))
    url = f"sqlite:///{tmp / 'landscope.db'}"
    upgrade(url)
    engine = make_engine(url)
    with make_sessionmaker(engine).begin() as s:
        run = Run(name="seed", spec={"model": "mlp"}, queue="landscope.any", total=10,
                  status="succeeded", step=10)
        s.add(run)
        s.flush()
        run_id = run.id
    with engine.begin() as c:
        sid = series_ids(c, run_id, ["train/loss"])["train/loss"]
        insert_points(c, [(sid, i, 1.0 / (i + 1), 0) for i in range(10)])
    engine.dispose()
    settings_ = Settings(_env_file=None, data_dir=tmp, database_url=url,
                         broker_url=f"sqla+sqlite:///{tmp / 'broker.db'}",
                         api_token=TOKEN, max_steps=50, max_queued_runs=1000, **extra)
    return create_app(settings_)


app = _app()
schema = schemathesis.openapi.from_asgi("/openapi.json", app)
protected_app = _app(protect_reads=True)
protected_schema = schemathesis.openapi.from_asgi("/openapi.json", protected_app)


@pytest.fixture(scope="module", autouse=True)
def lifespan():
    """Run the app's startup (engine, producer) once for all generated requests."""
    from fastapi.testclient import TestClient

    with TestClient(app), TestClient(protected_app):
        yield


CHECKS = [checks.not_a_server_error, checks.status_code_conformance,
          checks.content_type_conformance, checks.response_schema_conformance]
FUZZ = settings(max_examples=25, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])


@schema.parametrize()
@FUZZ
def test_no_5xx_and_every_response_matches_the_schema(case):
    # The two properties asked of the API: never a server error, and every response (status
    # code, content type, body) as /openapi.json documents it. Not asked: that every
    # schema-valid body is accepted; specs have rules JSON Schema cannot say (server
    # limits, norm_groups dividing widths) and answer those with a documented 422.
    case.call_and_validate(headers={"Authorization": f"Bearer {TOKEN}"}, checks=CHECKS)


@protected_schema.parametrize()
@FUZZ
def test_with_protected_reads_too(case):
    case.call_and_validate(headers={"Authorization": f"Bearer {TOKEN}"}, checks=CHECKS)


@protected_schema.parametrize()
@settings(max_examples=5, deadline=None, suppress_health_check=list(HealthCheck))
def test_protected_reads_without_the_token_are_documented_401s(case):
    response = case.call(headers={})
    if case.path != "/api/v1/health":
        # 400: a body that is not JSON is refused while parsing, before the token is read.
        assert response.status_code in (400, 401, 404, 405, 422), response.text
    case.validate_response(response, checks=CHECKS)
