"""`landscope submit`: the runs a server makes from --preset/--set/--vary are the runs
`landscope train` would run here; a dry run costs without creating; refusals say the field; a
bad key exits 2 before anything is sent; --wait follows runs and analyses on a real worker and
exits 1 when one failed."""

from __future__ import annotations

import subprocess
import sys

import pytest

from landscope.cli import _parser, main, submit_cmd, train_cmd
from tests.support.served import ROOT, clean_env, landscope_server


@pytest.fixture
def client(tmp_path):
    """The API on SQLite with the embedded broker (no worker: runs stay queued)."""
    from fastapi.testclient import TestClient

    from server.api.app import create_app
    from server.db.migrate import upgrade
    from server.settings import Settings

    url = f"sqlite:///{tmp_path / 'landscope.db'}"
    upgrade(url)
    settings = Settings(_env_file=None, data_dir=tmp_path, database_url=url,
                        broker_url=f"sqla+sqlite:///{tmp_path / 'broker.db'}")
    with TestClient(create_app(settings)) as c:
        yield c


def submit(client, *argv: str) -> int:
    args = _parser().parse_args(["submit", "--server", "http://testserver", *argv])
    return submit_cmd.run(args, http=client)


def as_train(argv: list[str]) -> list[str]:
    """The same runs as `train` arguments: train's --device picks where it trains and leaves
    the spec alone, submit's sets the runs' device (--set device=...)."""
    out, args = [], iter(argv)
    for a in args:
        out += ["--set", f"device={next(args)}"] if a == "--device" else [a]
    return out


@pytest.mark.parametrize("argv", [
    ["--preset", "quick-mlp"],
    ["--preset", "quick-mlp", "--set", "norm=batch", "--set", "steps=50"],  # fixes the varied key
    ["--preset", "quick-mlp", "--vary", "lr=0.1,0.5"],  # replaces the comparison
    ["--preset", "quick-resnet", "--vary", "norm=none,layer", "--set", "seed=3"],
    ["--preset", "quick-mlp", "--set", "probes.ics.layers=2,4", "--device", "cpu"],
    ["--set", "model=mlp", "--set", "width=16", "--vary", "seed=0,1,2"],  # no preset
])
def test_the_server_makes_the_runs_train_would_run(client, capsys, argv):
    assert submit(client, *argv) == 0
    out = capsys.readouterr().out
    exp_id = int(out.split()[1])
    made = client.get(f"/api/v1/experiments/{exp_id}").json()["runs"]
    planned = train_cmd.plan(_parser().parse_args(["train", *as_train(argv)]))
    assert sorted((r["spec"] for r in made), key=str) == sorted(
        (s.model_dump(mode="json") for _label, s in planned), key=str)
    assert f"dashboard: http://testserver/experiments/{exp_id}" in out


def test_a_dry_run_prints_the_servers_cost_and_creates_nothing(client, capsys):
    assert submit(client, "--preset", "quick-mlp", "--dry-run") == 0
    out = capsys.readouterr().out
    assert out.startswith("cost: 2 run(s); training ") and "4 analyses" in out
    assert client.get("/api/v1/experiments").json()["items"] == []
    assert submit(client, "--preset", "quick-mlp", "--dry-run", "--no-analyses") == 0
    assert "analyses" not in capsys.readouterr().out


def test_without_analyses_the_experiment_has_none(client, capsys):
    assert submit(client, "--preset", "quick-mlp", "--no-analyses", "--name", "plain") == 0
    (exp,) = client.get("/api/v1/experiments").json()["items"]
    assert (exp["name"], exp["analyses"]) == ("plain", [])


def test_a_refusal_names_its_field(client, capsys):
    assert submit(client, "--preset", "quick-mlp", "--set", "width=100000") == 1
    err = capsys.readouterr().err
    assert "POST /experiments: 422 base.width: the widest layer would have 100000" in err
    assert "LANDSCOPE_MAX_WIDTH" in err


@pytest.mark.parametrize("argv,needle", [
    (["--set", "stepz=3"], "stepz: unknown key"),
    (["--preset", "nope"], "--preset: unknown preset 'nope'"),
    (["--device", "gpu"], "--device: expected auto, cpu, cuda or cuda:N"),
    (["--set", "lr=-1"], "lr: Input should be greater than 0"),
    (["--dry-run", "--wait"], "--wait: a dry run creates nothing to wait for"),
    (["--server", "ftp://x"], "--server: expected an http:// or https:// URL"),
])
def test_bad_arguments_exit_2_before_anything_is_sent(capsys, argv, needle):
    # port 9 (discard) listens nowhere here: a request would fail with exit 1, not 2
    argv = ["--server", "http://127.0.0.1:9", *argv] if "--server" not in argv else argv
    assert main(["submit", *argv]) == 2
    assert needle in capsys.readouterr().err


def test_an_unreachable_server_says_how_to_point_at_one(capsys):
    assert main(["submit", "--preset", "quick-mlp", "--server", "http://127.0.0.1:9"]) == 1
    assert "start one with `landscope up`, or pass --server URL" in capsys.readouterr().err


@pytest.mark.slow
def test_wait_follows_runs_and_analyses_to_the_end_on_a_worker(tmp_path):
    def cli(*argv: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "landscope.cli", "submit", *argv,
                               "--server", base, "--wait", "--poll", "0.5"], cwd=ROOT,
                              env=clean_env(data_dir=tmp_path / "data"), capture_output=True,
                              text=True, timeout=600)

    with landscope_server("up", tmp_path) as base:
        done = cli("--preset", "quick-mlp", "--set", "steps=60", "--set", "eval_every=20")
        assert done.returncode == 0, done.stderr[-3000:]
        lines = done.stdout.splitlines()
        assert sum("succeeded at step 60/60" in ln for ln in lines) == 2, done.stdout
        # the preset's surface and spectrum on each run, followed to the end
        assert sum(ln.startswith("  analysis ") and ln.endswith(": succeeded")
                   for ln in lines) == 4, done.stdout
        assert "runs and analyses finished" in done.stderr  # the progress bar
        # a run the worker cannot train (no CIFAR-10 archive here) fails: exit 1, said so
        failed = cli("--set", "model=vgg", "--set", "dataset=cifar10", "--set", "steps=2",
                     "--vary", "norm=none")
        assert failed.returncode == 1, failed.stderr[-3000:]
        assert ": failed at step 0/2" in failed.stdout
