"""docs/geometry.md shows what scripts/make_geometry_doc.py measured, and one of its cells can be
measured again: the stored spec of one run is retrained here and its spectrum's top eigenvalue
and trace recomputed with the same seeds (the engine is deterministic: same spec, same numbers).

Tolerance: relative 1e-3 on the top eigenvalue and the trace. On the machine that wrote the
page the recomputed values were bit-identical with its thread count (1) and within 3e-16 with 2
threads; another CPU's kernels sum floats in another order over 800 SGD steps, which may move
the weights slightly, but not by a thousandth of the Hessian's largest eigenvalue or trace.
The test also fails when the page and results.json disagree, or when the stored spec is no
longer what the script would train (the preset changed: rerun the script).
"""

from __future__ import annotations

import importlib.util
import json
import math
import re
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = ROOT / "scripts"
DOC = ROOT / "docs" / "geometry.md"
RESULTS = ROOT / "docs" / "geometry" / "results.json"
RTOL = 1e-3


def _module(name: str):
    if str(SCRIPTS) not in sys.path:
        sys.path.insert(0, str(SCRIPTS))
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def results() -> dict:
    return json.loads(RESULTS.read_text())


@pytest.fixture(scope="module")
def page():
    return _module("_geometry_page")


def test_the_page_shows_every_measured_number_and_claim(results, page):
    text = DOC.read_text()
    for pair in page.pairs(results):
        for m in pair:
            row = (f"| {m['seed']} | {m['norm']} | {page.g4(m['loss'])} | "
                   f"{page.g4(m['test_acc'])} | {page.g4(m['top'])} | "
                   f"{page.pm(m['trace'], m['trace_se'])} | {page.g4(m['edge'])} | "
                   f"{m['outliers']} |")
            assert row in text
    claims = page.claims(results)
    assert len(claims) == len(page.CLAIMS)
    for claim, k, n in claims:
        assert n == len(results["seeds"]) and 0 <= k <= n
        assert f"- {claim}: **holds in {k} of {n}**" in text
    m = results["machine"]
    for fact in (m["torch"], m["load_before"], m["load_after"], results["dtype"]):
        assert str(fact) in text
    for png in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text):
        assert (DOC.parent / png).stat().st_size > 10_000, png


def test_outliers_lie_beyond_the_first_gap_above_the_bulk(page):
    # A bulk from 0 to 1 with mass 1 - 2/n, two isolated eigenvalues at 3 and 5 with 1/n each
    # (n = 1000), broadened as the engine does: the gap starts just above 1.
    import torch

    from worker.engine.geometry.hessian import _broaden

    n, b = 1000, 0.01
    bulk = torch.linspace(0.0, 1.0, 200, dtype=torch.float64)
    nodes = torch.cat([bulk, torch.tensor([3.0, 5.0], dtype=torch.float64)])
    weights = torch.cat([torch.full((200,), (1 - 2 / n) / 200, dtype=torch.float64),
                         torch.tensor([1 / n, 1 / n], dtype=torch.float64)])
    grid, dens = _broaden(nodes, weights, b, 2048)
    spec = {"slq": {"nodes": [nodes.tolist()], "broadening": b},
            "density": {"x": grid.tolist(), "y": dens.tolist()},
            "top_eigenvalues": [5.0, 3.0, 1.0, 0.995, 0.99]}
    sigma = b * 5.0
    assert math.isclose(page.gap_floor(spec, n),
                        page.GAP_FRACTION / (n * sigma * math.sqrt(2 * math.pi)))
    edge = page.bulk_edge(spec, n)
    assert 1.0 < edge < 1.0 + 5 * sigma
    assert page.outliers(spec, n) == 2
    # Without the two isolated eigenvalues there is no gap below the grid's end: no outlier.
    grid, dens = _broaden(bulk, torch.full((200,), 1 / 200, dtype=torch.float64), b, 2048)
    flat = {"slq": {"nodes": [bulk.tolist()], "broadening": b},
            "density": {"x": grid.tolist(), "y": dens.tolist()},
            "top_eigenvalues": [1.0, 0.995, 0.99, 0.985, 0.98]}
    assert page.outliers(flat, n) == 0


def test_a_cell_retrained_from_its_stored_spec_gives_the_page_s_spectrum(results, tmp_path):
    from server.analysis_spec import AnalysisSpec
    from server.settings import get_settings
    from server.spec import RunSpec
    from worker.engine.geometry.job import AnalysisJob
    from worker.engine.geometry.sink import MemoryAnalysisSink
    from worker.engine.sink import MemorySink
    from worker.engine.snapshots import DirectorySnapshotStore
    from worker.engine.trainer import Trainer

    make = _module("make_geometry_doc")
    check = results["check"]
    (cell,) = [c for c in results["cells"]
               if c["seed"] == check["seed"] and c["norm"] == check["norm"]]
    spec = RunSpec.model_validate(cell["run_spec"])
    assert spec == make.run_spec(check["seed"], check["norm"])  # the preset, as the page says
    stored = AnalysisSpec.model_validate(results["analysis_specs"]["spectrum"])
    # Top-k and trace draw from generators of their own: a 2-step, 1-vector density (not
    # compared) leaves them exactly as the page's full analysis computed them.
    quick = stored.model_copy(update={"spectrum": stored.spectrum.model_copy(
        update={"slq_steps": 2, "slq_vectors": 1, "density_points": 16})})
    data_dir = get_settings().data_dir
    threads = torch.get_num_threads()
    torch.set_num_threads(results["machine"]["torch_threads"])
    try:
        store = DirectorySnapshotStore(tmp_path / "snapshots")
        result = Trainer(spec, data_dir, "cpu").run(MemorySink(), snapshots=store)
        assert result.status == "succeeded"
        sink = MemoryAnalysisSink()
        AnalysisJob(spec, quick, data_dir, store, "cpu").run_all(sink)
    finally:
        torch.set_num_threads(threads)
    again = sink.named[spec.steps]["spectrum"]
    page_spec = cell["spectrum"]["values"]["spectrum"]
    top, trace = page_spec["top_eigenvalues"][0], page_spec["trace"]
    assert math.isclose(again["top_eigenvalues"][0], top, rel_tol=RTOL), (again, top)
    assert math.isclose(again["trace"], trace, rel_tol=RTOL), (again["trace"], trace)
    assert again["trace_probes"] == page_spec["trace_probes"]


def test_sharpness_is_the_mean_rise_at_the_radius(page):
    xs = [i / 10 - 1 for i in range(21)]  # the default 21-point axis on [-1, 1]
    loss = [[1.0 + 2 * x * x + 3 * y * y for x in xs] for y in xs]
    cell = {"surface": {"grid": {"x": xs, "y": xs, "loss": loss}}}
    assert math.isclose(page.sharpness(cell), (2 * 0.25 * 2 + 3 * 0.25 * 2) / 4, rel_tol=1e-12)
