"""Ghorbani et al. 2019's checks (server/reproduction/ghorbani2019.py) against spectra whose
answers are known: the engine's own spectrum of matrices with and without planted outliers
(a Wigner bulk plus C rank-one spikes: BBP puts them at theta + 1/theta, the bulk's edges at
+-1), and hand-built analyses for the claims' logic (gradient shares pass through)."""

from __future__ import annotations

import math

import pytest
import torch

from server import reproduction as R
from server.analysis_spec import Spectrum
from server.reproduction import ghorbani2019 as G
from worker.engine.geometry.hessian import spectrum
from worker.engine.geometry.sink import jsonable

N, C = 400, 10
SPIKES = [10.0 + i for i in range(C)]  # outliers at theta + 1/theta: 10.1 .. 19.05


def wigner(n: int, seed: int) -> torch.Tensor:
    """A GOE matrix whose semicircle spans [-1, 1] (entries of variance 1 / (4n))."""
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(n, n, generator=g, dtype=torch.float64)
    return (a + a.T) / math.sqrt(8 * n)


def planted(n: int, seed: int, spikes: list[float]) -> tuple[torch.Tensor, torch.Tensor]:
    """(H, V): the Wigner bulk plus sum_i theta_i v_i v_i^T on orthonormal random v_i."""
    g = torch.Generator().manual_seed(seed + 1)
    v, _ = torch.linalg.qr(torch.randn(n, len(spikes), generator=g, dtype=torch.float64))
    return wigner(n, seed) + v @ torch.diag(torch.tensor(spikes, dtype=torch.float64)) @ v.T, v


def engine_spectrum(h: torch.Tensor, grad: torch.Tensor) -> dict:
    """What the spectrum analysis reports for the operator v -> H v (the quick plan's
    settings), as the API's JSON."""
    cfg = Spectrum(**G._QUICK_SPECTRA[0]["spectrum"])
    return jsonable(spectrum(lambda v: h @ v, h.shape[0], cfg, seed=0, grad=grad))


def analysis(by_step: dict[int, dict]) -> R.AnalysisData:
    return R.AnalysisData("spectrum", "batch", {}, {t: {"values": {"spectrum": s}}
                                                    for t, s in by_step.items()})


def run(norm: str, by_step: dict[int, dict], seed: int = 0, acc: float = 0.9) -> R.RunData:
    spec = {"norm": norm, "lr": 0.5, "dataset": "mnist1d", "seed": seed}
    return R.RunData(spec, {"test/acc": ([0, 800], [0.1, acc])}, "succeeded",
                     analyses=[analysis(by_step)])


def hand(top1: float, share: float, edge: float = 1.0, lowest: float = -1.0) -> dict:
    """A hand-built spectrum step: lambda_1, nine more outliers down to `edge`... and the
    bulk's top lambda_11 = edge, lowest SLQ node `lowest`."""
    top = [top1] + [max(edge, top1 - i) for i in range(1, C)] + [edge]
    return {"top_eigenvalues": top, "gradient_share": share,
            "slq": {"nodes": [[lowest, 0.0, edge], [lowest / 2, edge]], "weights": []}}


# -- the statistic against the engine's spectrum of known matrices ------------------------------


def test_planted_outliers_read_as_outliers_and_a_bare_bulk_does_not():
    h, v = planted(N, 0, SPIKES)
    exact = torch.linalg.eigvalsh(h)
    s = engine_spectrum(h, grad=v[:, 0])
    o = G.outliers(s["top_eigenvalues"], G.lowest_node(s), C)
    # lambda_1 the top spike (19 + 1/19), the bulk's edges at +-1 (finite-n corrections ~0.1)
    assert o.top == pytest.approx(float(exact[-1]), rel=1e-6)
    assert o.edge == pytest.approx(float(exact[-C - 1]), abs=0.15)
    assert o.lowest == pytest.approx(float(exact[0]), abs=0.15)
    assert o.ratio == pytest.approx(float(exact[-1]) / max(float(exact[-C - 1]),
                                                           -float(exact[0])), rel=0.15)
    assert o.ratio > 15 >= G.ISOLATED

    bare = wigner(N, 0)
    s = engine_spectrum(bare, grad=torch.ones(N, dtype=torch.float64))
    o = G.outliers(s["top_eigenvalues"], G.lowest_node(s), C)
    assert 0.8 < o.ratio < 1.2 and o.ratio < G.ISOLATED  # the semicircle: lambda_1 ~ -lambda_min


def test_the_gradient_share_is_the_one_the_analysis_reports():
    h, v = planted(N, 1, SPIKES)
    inside = v @ torch.ones(C, dtype=torch.float64)  # in the outliers' span: share ~1
    g = torch.Generator().manual_seed(5)
    outside = torch.randn(N, generator=g, dtype=torch.float64)
    outside -= v @ (v.T @ outside)  # orthogonal to it: share ~ (C+1)/N at most
    for grad, lo, hi in ((inside, 0.99, 1.0), (outside, 0.0, 0.05)):
        s = engine_spectrum(h, grad)
        r = run("none", {40: s, 800: s})
        assert G.shares_by_step(r) == {40: s["gradient_share"], 800: s["gradient_share"]}
        assert lo <= s["gradient_share"] <= hi


def test_outlier_ratio_edge_cases():
    assert G.outliers([5.0] + [0.5] * 10, -1.0, C).ratio == 5.0  # extent from below: -lambda_min
    assert G.outliers([5.0] * 10 + [2.0], -1.0, C).ratio == 2.5  # from above: lambda_11
    assert G.outliers([1.0] + [0.0] * 10, 0.0, C).ratio == math.inf  # zero bulk
    assert math.isnan(G.outliers(["nan"] * 11, -1.0, C).ratio)  # the API's non-finite strings
    with pytest.raises(R.MissingData, match="needs 11"):
        G.outliers([1.0] * 5, -1.0, C)


# -- the claims ---------------------------------------------------------------------------------


def outcomes(fig_id: str, runs: list[R.RunData]) -> tuple[str, dict[str, R.Outcome]]:
    res = R.evaluate(R.FIGURE_BY_ID[fig_id], runs)
    return res.verdict, {c.id: o for c, o in res.outcomes}


def test_outliers_without_bn_and_none_with_it_reproduce_g1_and_the_reverse_does_not():
    spiky, flat = hand(top1=20.0, share=0.8), hand(top1=1.5, share=0.1)
    paper = [run("none", {40: spiky, 800: spiky}), run("batch", {40: flat, 800: flat})]
    verdict, o = outcomes("G1", paper)
    assert verdict == "reproduced"
    assert o["G1-outliers"].values["none/step40/ratio"] == 20.0
    assert o["G1-bn-absent"].values["batch/step800/ratio"] == 1.5
    reverse = [run("none", {40: flat, 800: flat}), run("batch", {40: spiky, 800: spiky})]
    assert outcomes("G1", reverse)[0] == "not reproduced"


def test_every_analysed_step_must_pass():
    spiky, flat = hand(top1=20.0, share=0.8), hand(top1=1.5, share=0.1)
    # Outliers only at the end without BN: not "early"; BN spiky early only: not absent.
    runs = [run("none", {40: flat, 800: spiky}), run("batch", {40: spiky, 800: flat})]
    _, o = outcomes("G1", runs)
    assert (o["G1-outliers"].ok, o["G1-bn-absent"].ok, o["G1-bn-less"].ok) == (False,) * 3


def test_gradient_shares_pass_through_to_g2():
    none = {40: hand(20.0, share=0.93), 800: hand(20.0, share=0.61)}
    bn = {40: hand(1.5, share=0.52), 800: hand(1.5, share=0.2)}
    verdict, o = outcomes("G2", [run("none", none), run("batch", bn)])
    assert o["G2-concentrated"].values == {"none/step40": 0.93, "none/step800": 0.61}
    assert o["G2-concentrated"].ok is True
    assert o["G2-bn-absent"].ok is False  # 0.52 is most of the gradient: not absent
    assert o["G2-bn-less"].ok is True and verdict == "partly"
    # exactly at the threshold: "most" holds, "absent" does not
    at = {40: hand(20.0, share=G.MOST), 800: hand(20.0, share=G.MOST)}
    _, o = outcomes("G2", [run("none", at), run("batch", at)])
    assert (o["G2-concentrated"].ok, o["G2-bn-absent"].ok, o["G2-bn-less"].ok) == (
        True, False, False)


def test_a_nan_spectrum_fails_and_a_missing_one_is_no_data():
    nan = hand(20.0, share=0.8) | {"top_eigenvalues": ["nan"] * 11, "gradient_share": "nan"}
    flat = hand(1.5, 0.1)
    _, o = outcomes("G1", [run("none", {40: nan, 800: nan}), run("batch", {40: flat})])
    assert o["G1-outliers"].ok is False and o["G1-bn-absent"].ok is True
    _, o = outcomes("G2", [run("none", {40: nan}), run("batch", {40: flat})])
    assert o["G2-concentrated"].ok is False
    bare = R.RunData({"norm": "none", "lr": 0.5, "dataset": "mnist1d", "seed": 0},
                     {"test/acc": ([0], [0.9])})
    verdict, o = outcomes("G1", [bare, run("batch", {40: flat})])
    assert o["G1-outliers"].ok is None and "no spectrum analysis" in o["G1-outliers"].ours
    # an analysis in another BN mode is not the one the claims read
    other = R.RunData(bare.spec, bare.series, analyses=[R.AnalysisData(
        "spectrum", "running", {}, {40: {"values": {"spectrum": hand(20.0, 0.8)}}})])
    assert outcomes("G1", [other, run("batch", {40: flat})])[1]["G1-outliers"].ok is None


def test_the_premise_both_train():
    spiky, flat = hand(top1=20.0, share=0.8), hand(top1=1.5, share=0.1)
    runs = [run("none", {40: spiky}, acc=0.15), run("batch", {40: flat})]
    verdict, o = outcomes("G1", runs)
    assert o["G-both-train"].ok is False and verdict == "not reproduced"


def test_three_seeds_report_median_and_range():
    runs = [r for s, top in ((0, 20.0), (1, 4.0), (2, 8.0))
            for r in (run("none", {40: hand(top, 0.8)}, seed=s),
                      run("batch", {40: hand(1.5, 0.1)}, seed=s))]
    _, o = outcomes("G1", runs)
    out = o["G1-outliers"]
    assert (out.k, out.n) == (3, 3) and out.values["none/step40/ratio"] == 8.0
    assert (out.spread["none/step40/ratio"].lo, out.spread["none/step40/ratio"].hi) == (4.0, 20.0)


def test_the_plans_analyse_saved_snapshots_with_c_plus_1_eigenvalues():
    for scale in ("quick", "cpu"):
        plan = R.EXPERIMENTS["ghorbani-spectra"].plans[scale]
        assert plan.seeds == R.SEEDS[scale]
        assert {spec.norm for spec in plan.specs()} == {"none", "batch"}
        for a in plan.analyses:
            assert a["kind"] == "spectrum" and a["bn_mode"] == G.BN_MODE
            assert a["spectrum"]["top_k"] == C + 1
        for spec in plan.specs():
            steps = sorted(t if t is not None else spec.steps
                           for a in plan.analyses for t in (a["steps"] or [None]))
            assert G.CLASSES[spec.dataset] == C
            assert steps[0] == spec.steps // 20 and steps[-1] == spec.steps
            assert all(spec.snapshots.due(t, spec.steps) for t in steps)


def test_spectra_of_several_analyses_merge_by_step_the_newer_winning():
    a, b, c = hand(20.0, 0.8), hand(1.5, 0.1), hand(3.0, 0.3)
    r = run("none", {40: a})
    r.analyses += [analysis({800: b, 40: c})]
    assert G.spectra(r) == {40: c, 800: b}
    assert list(G.spectra(r)) == [40, 800]
