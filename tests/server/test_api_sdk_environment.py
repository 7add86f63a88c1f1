"""An SDK run's environment (landscope.init records it): stored with the run and served as
RunOut.environment; a bad one is a 422 at body.environment, never a 5xx."""

from __future__ import annotations

CID = "0123456789abcdef0123456789abcdef"
ENV = {"torch_threads": 1, "interop_threads": 2, "deterministic": False, "dtype": "float32",
       "device": "cpu", "device_name": "AMD EPYC", "cpu": "AMD EPYC", "isa": "AVX512",
       "versions": {"python": "3.11.7", "torch": "2.13.0+cpu", "numpy": "2.4.6",
                    "landscope": "0.1.0"}}


def test_an_sdk_runs_environment_is_served_with_the_run(client):
    r = client.post("/api/v1/sdk/runs", json={"client_id": CID, "name": "x", "environment": ENV})
    assert r.status_code == 201, r.text
    assert r.json()["environment"] == ENV
    assert client.get(f"/api/v1/runs/{r.json()['id']}").json()["environment"] == ENV
    r = client.post("/api/v1/sdk/runs", json={"client_id": CID[::-1], "name": "old sdk"})
    assert r.status_code == 201 and r.json()["environment"] is None


def test_a_bad_environment_is_a_422_at_its_field(client):
    def loc(env):
        r = client.post("/api/v1/sdk/runs", json={"client_id": CID, "name": "x",
                                                  "environment": env})
        assert r.status_code == 422, r.text
        return r.json()["detail"][0]["loc"]

    assert loc([1, 2]) == ["body", "environment"]
    assert loc({"cpu": "x" * 20_000}) == ["body", "environment"]
    assert loc({"cpu": "\u0000"}) == ["body", "environment", "cpu"]
    assert client.get("/api/v1/runs").json()["total"] == 0
