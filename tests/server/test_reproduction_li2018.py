"""Li et al. 2018's checks (server/reproduction/li2018.py) on hand-built runs: bowls read as
convex-looking, saddles and ripples as chaotic, each claim deciding the way the surfaces it is
given say, seed by seed, and missing analyses leaving a claim undecided, never wrong."""

from __future__ import annotations

import math

import pytest

from server import reproduction as R
from server.reproduction import li2018 as L

S, D = L.SHALLOW, L.DEEP  # the plan's depths: every check reads these

XS = [-1 + 0.1 * i for i in range(21)]


def bowl(x, y):
    return 0.05 + x * x + 2 * y * y


def saddle(x, y):
    return 1.0 + x * x - y * y  # non-convex everywhere; grad . p <= 0 where |y| >= |x|


def ripples(x, y):
    # A bowl with a ripple of curvature -(5 pi)^2 * 0.05 ~ -12 against the bowl's 2 to 4.
    return bowl(x, y) + 0.05 * math.cos(5 * math.pi * x) * math.cos(5 * math.pi * y)


def surface(f):
    return R.AnalysisData("surface", "running", {}, {
        200: {"x": XS, "y": XS, "loss": [[f(x, y) for x in XS] for y in XS]}})


def spectrum(ratio: float):
    return R.AnalysisData("spectrum", "running", {}, {200: {"values": {"spectrum": {
        "top_eigenvalues": [10.0], "slq": {"nodes": [[-10.0 * ratio, 1.0, 9.0]]}}}}})


def run(depth, skip, f, acc=0.95, seed=0, ratio=None):
    spec = {"model": "resnet", "resnet_depth": depth, "skip": skip, "norm": "batch",
            "lr": 0.1, "seed": seed}
    analyses = [surface(f)] if f is not None else []
    if ratio is not None:
        analyses.append(spectrum(ratio))
    return R.RunData(spec, {"test/acc": ([200], [acc])}, "succeeded", [], "", analyses)


def paper_like(seed=0, deep_noshort=saddle, shallow_noshort=bowl, acc=0.95):
    return [run(S, True, bowl, seed=seed, ratio=0.01), run(D, True, bowl, seed=seed,
                                                             ratio=0.02),
            run(S, False, shallow_noshort, seed=seed, acc=acc, ratio=0.05),
            run(D, False, deep_noshort, seed=seed, acc=acc, ratio=0.6)]


def outcomes(fig, runs):
    res = R.evaluate(fig, runs)
    return res, {c.id: o for c, o in res.outcomes}


def test_the_paper_is_registered_with_unique_ids_and_seeded_plans():
    assert R.PAPER_BY_KEY["li2018"] is L.PAPER
    assert R.FIGURE_BY_ID["L5"].experiment == "li-skip-depth"
    for scale in ("quick", "cpu"):
        plan = R.EXPERIMENTS["li-skip-depth"].plans[scale]
        assert plan.seeds == R.SEEDS[scale]
        specs = plan.specs(device="cpu")
        cells = {(s.resnet_depth, s.skip, s.seed) for s in specs}
        assert cells == {(d, k, s) for d in (S, D) for k in (True, False)
                         for s in R.SEEDS[scale]}
        assert {s.norm for s in specs} == {"batch"} and {s.dataset for s in specs} == {"digits"}
        assert all(s.probes.landscape.every == 0 for s in specs)
        assert {a["kind"] for a in plan.analyses} >= {"surface"}


def test_the_texts_name_the_depths_that_are_run():
    # The plan's depths are the constants; what the doc prints about them must say the same.
    exp = R.EXPERIMENTS["li-skip-depth"]
    for scale in ("quick", "cpu"):
        assert exp.plans[scale].vary["resnet_depth"] == [S, D]
        assert f"ResNet-{S}/{D} " in exp.data[scale]
    claims = {c.id: c for c in R.FIGURE_BY_ID["L5"].claims}
    assert f"depth {D} " in claims["L5-skips-prevent"].text
    assert f"depth {D} " in claims["L5-depth-chaotic"].statistic
    assert f"ResNet-{S} and ResNet-{D} " in R.FIGURE_BY_ID["L5"].choices[0]

def test_the_plans_analyses_are_valid_and_centred_on_the_trained_point():
    from server.analysis_spec import AnalysisSpec

    for scale in ("quick", "cpu"):
        for a in R.EXPERIMENTS["li-skip-depth"].plans[scale].analyses:
            spec = AnalysisSpec.model_validate(a)
            if spec.kind == "surface":
                xs = spec.x_axis().values()
                assert spec.x_axis().points % 2 == 1 and xs[len(xs) // 2] == 0
                assert (spec.x_axis().lo, spec.x_axis().hi) == (-1.0, 1.0)


def test_a_paper_like_set_of_surfaces_reproduces_fig_5_and_7():
    res, o = outcomes(R.FIGURE_BY_ID["L5"], paper_like())
    assert res.verdict == "reproduced", [(k, v.ours) for k, v in o.items()]
    assert o["L5-skip-convex"].values[f"{S}/nonconvex"] == 0
    assert o["L5-depth-chaotic"].values[f"{D}-noshort/nonconvex"] == 1
    # The saddle x^2 - y^2: grad . p = 2(x^2 - y^2) <= 0 where |y| >= |x| (ties on the
    # diagonals count: the gradient is then perpendicular, not towards the centre).
    disc = [(i, j) for i in range(-9, 10) for j in range(-9, 10)
            if i * i + j * j <= 100 and (i, j) != (0, 0)]
    want = sum(abs(j) >= abs(i) for i, j in disc) / len(disc)
    assert o["L5-misdirected"].values["noshort"] == pytest.approx(want)
    res7, o7 = outcomes(L.FIGURE_7, paper_like())
    assert res7.verdict == "reproduced" and o7["L7-skip-minimum"].values[f"{D}/ratio"] == 0.02


def test_ripples_count_as_non_convex_and_make_the_depth_transition():
    _, o = outcomes(R.FIGURE_BY_ID["L5"], paper_like(deep_noshort=ripples))
    n = o["L5-depth-chaotic"].values[f"{D}-noshort/nonconvex"]
    assert L.CONVEX_LOOKING < n < 1 and o["L5-depth-chaotic"].ok
    assert o["L5-depth-chaotic"].values[f"{D}-noshort/minima"] > 0


def test_when_skip_nets_are_rough_and_deep_noshort_is_smooth_the_figure_is_not_reproduced():
    runs = [run(S, True, saddle), run(D, True, saddle), run(S, False, bowl),
            run(D, False, bowl)]
    res, o = outcomes(R.FIGURE_BY_ID["L5"], runs)
    assert not o["L5-skip-convex"].ok and not o["L5-depth-chaotic"].ok
    assert not o["L5-skips-prevent"].ok and not o["L5-misdirected"].ok
    assert o["L5-noshort-20"].ok  # the shallow noshort bowl is benign, as in the paper
    assert res.verdict == "partly"


def test_a_net_that_does_not_train_fails_the_premise():
    res, o = outcomes(R.FIGURE_BY_ID["L5"], paper_like(acc=0.1))
    assert o["L-premise-train"].ok is False and res.verdict == "not reproduced"


def test_claims_are_judged_seed_by_seed():
    runs = paper_like(seed=0) + paper_like(seed=1) + paper_like(seed=2, deep_noshort=bowl)
    _, o = outcomes(R.FIGURE_BY_ID["L5"], runs)
    assert (o["L5-depth-chaotic"].k, o["L5-depth-chaotic"].n) == (2, 3)
    assert o["L5-depth-chaotic"].status == "mixed"
    assert o["L5-skip-convex"].status == "holds"


def test_missing_surfaces_or_spectra_leave_the_claims_undecided():
    runs = paper_like()
    runs[3] = run(D, False, None)
    _, o = outcomes(R.FIGURE_BY_ID["L5"], runs)
    assert o["L5-depth-chaotic"].ok is None and "no surface analysis" in o[
        "L5-depth-chaotic"].ours
    assert o["L5-skip-convex"].ok is True
    no_spectra = [run(d, s, bowl) for d in (S, D) for s in (True, False)]
    _, o7 = outcomes(L.FIGURE_7, no_spectra)
    assert o7["L7-skip-minimum"].ok is None


def test_a_surface_that_overflowed_everywhere_is_undecided_not_convex():
    runs = paper_like()
    runs[1] = run(D, True, lambda x, y: math.inf)
    _, o = outcomes(R.FIGURE_BY_ID["L5"], runs)
    assert o["L5-skip-convex"].ok is None
