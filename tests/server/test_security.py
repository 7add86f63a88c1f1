"""Security settings of the API: the token on mutations (always) and on reads (when
PROTECT_READS is set), CORS closed unless origins are named, and no path from a request into
the file system."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from server.settings import Settings
from tests.server.conftest import make_settings

TOKEN = "s3cret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
SPEC = {"model": "mlp", "dataset": "digits", "steps": 10, "norm": "batch"}


def _serve(sqlite_backend: Settings, **overrides) -> Iterator[TestClient]:
    from server.api.app import create_app

    settings = sqlite_backend.model_copy(update=overrides)
    settings = Settings.model_validate(settings.model_dump())  # validators run again
    with TestClient(create_app(settings)) as client:
        yield client


@pytest.fixture
def locked(sqlite_backend: Settings) -> Iterator[TestClient]:
    yield from _serve(sqlite_backend, api_token=TOKEN, protect_reads=True)


@pytest.fixture
def mutations_only(sqlite_backend: Settings) -> Iterator[TestClient]:
    yield from _serve(sqlite_backend, api_token=TOKEN)


READS = ["/api/v1/runs", "/api/v1/experiments", "/api/v1/presets", "/api/v1/workers",
         "/api/v1/runs/1", "/api/v1/runs/1/metrics", "/api/v1/runs/1/export?format=csv"]


@pytest.mark.parametrize("path", READS)
def test_protected_reads_need_the_token(locked, path):
    r = locked.get(path)
    assert r.status_code == 401, r.text
    assert "for reads" in r.json()["detail"] and r.headers["www-authenticate"] == "Bearer"
    assert locked.get(path, headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert locked.get(path, headers=AUTH).status_code in (200, 404)  # 404: no run 1 yet


def test_health_stays_open_when_reads_are_protected(locked):
    assert locked.get("/api/v1/health").status_code == 200


def test_with_protected_reads_a_run_round_trips_with_the_token(locked):
    assert locked.post("/api/v1/runs", json={"spec": SPEC}).status_code == 401
    created = locked.post("/api/v1/runs", json={"spec": SPEC}, headers=AUTH)
    assert created.status_code == 201, created.text
    rid = created.json()["id"]
    assert locked.get(f"/api/v1/runs/{rid}", headers=AUTH).json()["id"] == rid


def test_by_default_reads_are_open_and_mutations_need_the_token(mutations_only):
    assert mutations_only.get("/api/v1/runs").status_code == 200
    r = mutations_only.post("/api/v1/runs", json={"spec": SPEC})
    assert r.status_code == 401 and "for changes" in r.json()["detail"]


def test_protecting_reads_without_a_token_is_a_settings_error(tmp_path: Path):
    with pytest.raises(ValidationError, match="PROTECT_READS needs LANDSCOPE_API_TOKEN"):
        make_settings(tmp_path, "sqlite://", "memory://", protect_reads=True)


def test_the_token_and_flags_come_from_the_environment(monkeypatch):
    monkeypatch.setenv("LANDSCOPE_API_TOKEN", TOKEN)
    monkeypatch.setenv("LANDSCOPE_PROTECT_READS", "true")
    monkeypatch.setenv("LANDSCOPE_CORS_ORIGINS", "https://a.example, https://b.example")
    s = Settings(_env_file=None)
    assert s.protect_reads and s.api_token.get_secret_value() == TOKEN
    assert s.cors_origin_list == ["https://a.example", "https://b.example"]
    assert not s.dev


def preflight(client: TestClient, origin: str):
    return client.options("/api/v1/runs", headers={
        "Origin": origin, "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization,content-type"})


def test_cors_is_closed_by_default(mutations_only):
    r = preflight(mutations_only, "https://evil.example")
    assert "access-control-allow-origin" not in r.headers
    r = mutations_only.get("/api/v1/runs", headers={"Origin": "https://evil.example"})
    assert r.status_code == 200 and "access-control-allow-origin" not in r.headers


def test_cors_opens_to_the_named_origins_only(sqlite_backend):
    for client in _serve(sqlite_backend, cors_origins="https://lab.example"):
        ok = preflight(client, "https://lab.example")
        assert ok.status_code == 200
        assert ok.headers["access-control-allow-origin"] == "https://lab.example"
        assert "authorization" in ok.headers["access-control-allow-headers"].lower()
        assert "access-control-allow-credentials" not in ok.headers  # bearer, not cookies
        bad = preflight(client, "https://evil.example")
        assert "access-control-allow-origin" not in bad.headers
        got = client.get("/api/v1/runs", headers={"Origin": "https://lab.example"})
        assert got.headers["access-control-allow-origin"] == "https://lab.example"


@pytest.mark.parametrize("field,value", [
    ("dataset", "../../etc/passwd"), ("dataset", "/etc/passwd"), ("model", "../vgg"),
    ("device", "cuda:0/../../x"),
])
def test_no_path_from_a_spec_into_the_file_system(mutations_only, field, value):
    """Names that reach the disk (datasets, models, devices) are enumerated, not paths."""
    r = mutations_only.post("/api/v1/runs", json={"spec": {**SPEC, field: value}},
                            headers=AUTH)
    assert r.status_code == 422, r.text
    assert any(field in err["loc"] for err in r.json()["detail"]), r.json()


def test_an_export_is_named_by_the_run_id_whatever_its_name(mutations_only):
    created = mutations_only.post(
        "/api/v1/runs", json={"spec": SPEC, "name": "../../etc/passwd"}, headers=AUTH)
    assert created.status_code == 201, created.text
    rid = created.json()["id"]
    r = mutations_only.get(f"/api/v1/runs/{rid}/export?format=csv")
    assert r.headers["content-disposition"] == f'attachment; filename="landscope-run-{rid}.csv"'
