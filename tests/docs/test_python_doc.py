"""docs/python.md runs as written: its Python blocks, in order, as one script against a real
`landscope api` (only the server URL is replaced), then its `landscope sync` line on the
offline run the page wrote; the notebook client then finds what the page says is there."""

from __future__ import annotations

import math
import re
import subprocess
import sys
from pathlib import Path

import pytest

from landscope.client import Client
from tests.support.served import ROOT, clean_env, landscope_server

DOC = ROOT / "docs" / "python.md"
DOC_URL = "http://127.0.0.1:8000"


def blocks(lang: str) -> list[str]:
    return re.findall(rf"^```{lang}\n(.*?)^```", DOC.read_text(), flags=re.S | re.M)


def test_the_page_names_only_things_that_exist():
    text = DOC.read_text()
    assert "examples/own_network.py" in text and (ROOT / "examples/own_network.py").exists()
    assert "tests/docs/test_python_doc.py" in text
    for path in re.findall(r"`((?:server|worker|docs)/[\w/]+\.(?:py|md))`", text):
        assert (ROOT / path).exists(), path


@pytest.mark.slow
def test_the_python_blocks_run_and_leave_what_the_page_says(tmp_path: Path):
    with landscope_server("api", tmp_path) as url:
        script = "\n\n".join(blocks("python")).replace(DOC_URL, url)
        (tmp_path / "page.py").write_text(script)
        env = {**clean_env(), "HOME": str(tmp_path)}  # the SDK's spool: not the real ~
        done = subprocess.run([sys.executable, "page.py"], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stdout + done.stderr
        assert "422 [(('query', 'max_points')" in done.stdout

        (sync_line,) = [line for b in blocks("bash") for line in b.splitlines()
                        if line.startswith("landscope sync runs/")]
        argv = sync_line.split("#")[0].replace(DOC_URL, url).split()[1:]
        for _ in range(2):  # a second sync changes nothing
            synced = subprocess.run([sys.executable, "-m", "landscope.cli", *argv],
                                    cwd=tmp_path, env=env, capture_output=True, text=True,
                                    timeout=300)
            assert synced.returncode == 0, synced.stdout + synced.stderr

        with Client(url) as client:
            runs = client.runs(experiment="docs").set_index("name")
            assert set(runs.index) == {"mlp-bn", "mlp-bn-probed", "on-the-train"}
            assert (runs.status == "succeeded").all()
            offline = client.metrics(runs.loc["on-the-train", "id"])
            offline = offline[offline.key != "time/wall_s"]  # the SDK's own wall-time points
            offline = offline.reset_index(drop=True)
            assert list(offline.step) == list(range(10))
            assert offline.value.tolist() == [1.0 / (s + 1) for s in range(10)]
            first = client.metrics(runs.loc["mlp-bn", "id"], keys="test/loss")
            assert len(first) == 1 and math.isnan(first.value.iloc[0])
            probed = runs.loc["mlp-bn-probed", "id"]
            assert len(client.probe_records(probed)) == 4 * 4  # steps 0, 10, 20, 30
            (aid,) = client.analyses(run_id=probed).id
            assert client.analysis(aid).at().loss.shape == (7, 7)
