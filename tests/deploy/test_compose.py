"""docker-compose.yml is checked by a real Compose implementation (`docker compose config`,
or Debian's docker-compose 1.29 where the v2 plugin is absent; .ci/run installs it), then the
resolved configuration is held to what the deployment promises. No Docker engine runs here:
`config` parses, validates against the Compose schema and interpolates without one."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]


def compose_command() -> list[str]:
    docker = shutil.which("docker")
    v2 = docker and subprocess.run([docker, "compose", "version"], capture_output=True)
    if v2 and v2.returncode == 0:
        return [docker, "compose"]
    legacy = shutil.which("docker-compose")
    if legacy:
        return [legacy]
    pytest.fail("neither `docker compose` nor `docker-compose` is installed "
                "(apt-get install docker-compose; .ci/run does)")


def resolved(*files: str, env: dict[str, str] | None = None) -> dict:
    cmd = compose_command()
    for f in files:
        cmd += ["-f", str(ROOT / f)]
    proc = subprocess.run([*cmd, "config"], capture_output=True, text=True, cwd=ROOT,
                          env={"PATH": "/usr/bin:/bin:/usr/local/bin", **(env or {})})
    assert proc.returncode == 0, proc.stderr
    return yaml.safe_load(proc.stdout)


@pytest.fixture(scope="module")
def single() -> dict:
    return resolved("docker-compose.yml")


def gpu_ids(service: dict) -> list[str]:
    devices = service["deploy"]["resources"]["reservations"]["devices"]
    assert [d["driver"] for d in devices] == ["nvidia"]
    assert "gpu" in devices[0]["capabilities"]
    return devices[0]["device_ids"]


def test_services_and_their_health(single):
    services = single["services"]
    assert {"postgres", "redis", "api", "worker", "worker-cpu"} <= set(services)
    assert "pgdata" in single["volumes"] and "redisdata" in single["volumes"]
    assert any("/var/lib/postgresql/data" in str(v) for v in services["postgres"]["volumes"])
    assert "--appendonly" in services["redis"]["command"]
    for name in ("postgres", "redis"):
        assert services[name]["healthcheck"]["test"], name
    # The API waits for healthy stores; workers wait for the API (it applies migrations).
    assert services["api"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert services["worker"]["depends_on"]["api"]["condition"] == "service_healthy"


def test_every_landscope_service_points_at_the_same_stores(single):
    services = single["services"]
    for name in ("api", "worker", "worker-cpu"):
        env = services[name]["environment"]
        assert env["LANDSCOPE_DATABASE_URL"].startswith("postgresql+psycopg://"), name
        assert "@postgres:5432/" in env["LANDSCOPE_DATABASE_URL"], name
        assert env["LANDSCOPE_BROKER_URL"].startswith("redis://redis:6379/"), name
        assert any(str(v).endswith(":/data") or "/data" in str(v)
                   for v in services[name]["volumes"]), name


def test_gpu_worker_reserves_one_gpu_and_interpolates_its_id():
    assert gpu_ids(resolved("docker-compose.yml")["services"]["worker"]) == ["0"]
    again = resolved("docker-compose.yml", env={"LANDSCOPE_GPU": "3"})
    assert gpu_ids(again["services"]["worker"]) == ["3"]
    # Inside the container the reserved GPU is cuda:0, a solo worker on it.
    assert again["services"]["worker"]["command"][-2:] == ["--device", "cuda:0"]


def test_secrets_come_from_the_environment():
    cfg = resolved("docker-compose.yml",
                   env={"POSTGRES_PASSWORD": "s3cret", "LANDSCOPE_API_TOKEN": "tok"})
    api = cfg["services"]["api"]["environment"]
    assert api["LANDSCOPE_API_TOKEN"] == "tok"
    assert ":s3cret@postgres" in api["LANDSCOPE_DATABASE_URL"]
    assert cfg["services"]["postgres"]["environment"]["POSTGRES_PASSWORD"] == "s3cret"


def test_multi_gpu_override_pins_one_worker_per_gpu(single):
    cfg = resolved("docker-compose.yml", "docker-compose.gpus.yml")
    workers = {n: s for n, s in cfg["services"].items() if n.startswith("worker") and
               "deploy" in s and "resources" in s["deploy"]}
    ids = sorted(gpu_ids(s)[0] for s in workers.values())
    assert ids == ["0", "1", "2", "3"]
    base = single["services"]["worker"]
    for name, service in workers.items():  # restated settings stay in step with the base file
        assert service["environment"] == base["environment"], name
        assert service["build"]["dockerfile"] == base["build"]["dockerfile"], name
        assert service["volumes"] == base["volumes"], name


def test_dockerfiles_copy_what_exists_and_pin_torch():
    for name in ("api", "worker"):
        text = (ROOT / "docker" / f"{name}.Dockerfile").read_text()
        for line in text.splitlines():
            if line.startswith("COPY "):
                for src in line.split()[1:-1]:
                    assert (ROOT / src).exists(), f"{name}.Dockerfile copies missing {src}"
        assert "-c constraints.txt" in text
    assert "download.pytorch.org/whl/cpu" in (ROOT / "docker" / "api.Dockerfile").read_text()
