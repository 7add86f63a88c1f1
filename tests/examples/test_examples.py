"""The examples run as a user runs them: `landscope up` in a process of its own (a temporary
LANDSCOPE_DATA_DIR, the embedded default: SQLite, the embedded broker, one worker), the
example as another process against its URL, then the notebook client checks what the server
holds."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from landscope.client import Client
from tests.support.served import clean_env, landscope_server

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def server(tmp_path: Path) -> Iterator[str]:
    with landscope_server("up", tmp_path) as url:
        yield url


@pytest.mark.slow
def test_own_network_trains_probes_and_analyses_through_the_sdk(server, tmp_path):
    steps, points = 30, 5
    done = subprocess.run(
        [sys.executable, "examples/own_network.py", server, "--steps", str(steps),
         "--surface-points", str(points), "--experiment", "example-test"],
        cwd=ROOT, env={**clean_env(), "HOME": str(tmp_path)},  # the SDK's spool: not ~
        capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "succeeded: test accuracy" in done.stdout

    with Client(server) as client:
        (run,) = client.runs(experiment="example-test", raw=True)
        assert run["status"] == "succeeded" and run["source"] == "sdk"
        assert run["config"]["steps"] == steps
        m = client.metrics(run["id"])
        loss = m[m.key == "train/loss"]
        assert list(loss.step) == list(range(steps)) and np.isfinite(loss.value).all()
        assert {"train/acc", "test/acc", "test/loss"} <= set(m.key)
        assert any(k.startswith("landscape/") for k in m.key)  # the probes' scalars
        etas = client.probe_records(run["id"])
        assert len(etas) > 0 and set(etas.step) <= set(range(steps))
        assert len(client.distributions(run["id"])) > 0  # activation histograms
        (aid,) = client.analyses(run_id=run["id"]).id
        a = client.analysis(aid)
        assert a.kind == "surface" and a.status == "succeeded" and a.bn_mode == "batch"
        s = a.at()
        assert s.loss.shape == (points, points) and s.measured.all()
        assert np.isfinite(s.loss).all()
        # the centre is the trained network, in a valley: filter-normalised unit steps away
        # from it, the loss is higher
        assert s.loss[points // 2, points // 2] < np.median(s.loss)
