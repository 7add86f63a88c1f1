"""scripts/reproduce_figures.py: trains catalogue runs in-process into `landscope train`'s
layout, reads them back identically, and draws PNGs with the dashboard's figure builders in
headless chromium. The catalogue only names dashboard figures that exist."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from server import reproduction as R

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "reproduce_figures.py"


def _script():
    spec = importlib.util.spec_from_file_location("reproduce_figures", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_figure_names_dashboard_figures_that_exist():
    from webapp.figures import FIGURES

    for fig in R.FIGURES:
        assert fig.plots and set(fig.plots) <= set(FIGURES), fig.id
        if any(p.startswith("dist_") for p in fig.plots):
            assert fig.layers, fig.id


@pytest.mark.slow
def test_run_then_render_a_figure(tmp_path):
    out = tmp_path / "results"
    done = subprocess.run([sys.executable, str(SCRIPT), "run", "--scale", "quick", "--only",
                           "mlp-landscape", "--set", "steps=200", "--set", "seed=0",
                           "--out", str(out),
                           "--data-dir", str(tmp_path)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    runs = sorted(p.name for p in (out / "mlp-landscape").iterdir())
    assert runs == sorted(s.name_hint() for s in
                          R.EXPERIMENTS["mlp-landscape"].plans["quick"].specs(steps=200, seed=0))
    record = json.loads((out / "mlp-landscape" / runs[0] / "run.json").read_text())
    assert record["status"] == "succeeded" and record["spec"]["device"] == "cpu"

    loaded = _script().load_experiment(out, "mlp-landscape")
    steps, values = loaded[0].series["landscape/beta"]
    assert steps == list(range(0, 200, 20)) and len(values) == 10
    assert len(loaded[0].etas) == 10 * 4  # four step sizes at every probed step

    png, table = tmp_path / "png", tmp_path / "table.md"
    done = subprocess.run([sys.executable, str(SCRIPT), "render", str(out), "--scale",
                           "quick", "--figures", "4-mlp", "--png", str(png), "--table",
                           str(table)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "Fig 4-mlp (MLP)" in done.stdout
    image = (png / "fig4-mlp.png").read_bytes()
    assert image[:8] == b"\x89PNG\r\n\x1a\n" and len(image) > 20_000
    assert list(png.iterdir()) == [png / "fig4-mlp.png"]  # no HTML left behind
    assert "**Fig 4-mlp** (MLP)" in table.read_text()
