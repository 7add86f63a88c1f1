"""The reproduction catalogue (server/reproduction/): what it submits is what the server
makes, every figure can be decided from its experiment's runs, and the checks decide right."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest

from server import reproduction as R
from server.reproduction.plans import SEEDS
from server.spec import RunSpec


def test_the_catalogue_imports_no_torch():
    code = "import sys, server.reproduction; assert 'torch' not in sys.modules"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_names_are_unique_and_parse_back():
    names = [e.name(s) for e in R.EXPERIMENTS.values() for s in e.plans]
    assert len(set(names)) == len(names)
    for e in R.EXPERIMENTS.values():
        for s in e.plans:
            assert R.parse_name(e.name(s)) == (e, s)
            assert e.name(s).startswith("repro: Fig ")
            assert e.data[s]
    assert R.parse_name("repro: Fig 99 nothing [quick]") is None


@pytest.mark.parametrize("scale", R.SCALES)
def test_the_server_makes_exactly_the_planned_runs(sqlite_client, scale):
    for exp in R.experiments_for(scale):
        plan = exp.plans[scale]
        r = sqlite_client.post("/api/v1/experiments", json=plan.body(exp.name(scale)))
        assert r.status_code == 201, r.text
        got = [RunSpec.model_validate(run["spec"]) for run in r.json()["runs"]]
        assert got == plan.specs()
        assert r.json()["name"] == exp.name(scale)


def test_scales_keep_the_paper_protocol_where_they_claim_to():
    for key in ("dln-ics", "dln-lp", "dln-landscape"):
        cpu = R.EXPERIMENTS[key].plans["cpu"].specs(seed=0)  # cpu runs three seeds, paper one
        assert cpu == R.EXPERIMENTS[key].plans["paper"].specs()
        assert {(s.depth, s.width, s.steps, s.batch_size) for s in cpu} == {(25, 10, 10000, None)}
    paper_vgg = R.EXPERIMENTS["vgg-lr"].plans["paper"].specs()
    assert {(s.vgg_config, s.dataset, s.steps) for s in paper_vgg} == {(16, "cifar10", 15000)}
    assert {(s.norm, s.lr) for s in paper_vgg} == {(n, lr) for n in ("none", "batch")
                                                   for lr in (0.1, 0.5)}
    cpu_vgg = R.EXPERIMENTS["vgg-noisy"].plans["cpu"].specs()
    assert {s.norm for s in cpu_vgg} == {"none", "batch", "noisy_batch", "noise"}
    assert {(s.vgg_config, s.width, s.dataset, s.steps) for s in cpu_vgg} == {
        (11, 0.25, "digits", 2000)}


def test_vgg_plans_run_their_scales_seeds_and_cpu_on_32x32_digits():
    """cpu: digits resized to 32x32, so VGG-11 skips no pool (as on CIFAR-10) and both nets
    can train; quick stays 8x8 (CI's budget). Every run of both scales in 3 seeds."""
    for key in ("vgg-lr", "vgg-noisy"):
        for scale, size in (("cpu", 32), ("quick", 8)):
            specs = R.EXPERIMENTS[key].plans[scale].specs()
            assert {s.seed for s in specs} == set(SEEDS[scale]) == {0, 1, 2}
            assert {s.dataset_options.get("size", 8) for s in specs} == {size}
            assert len(specs) == 4 * len(SEEDS[scale])
            assert f"{size}x{size}" in R.EXPERIMENTS[key].data[scale]


# -- every figure can be decided from its experiment's runs ------------------------------------


def synthetic_analysis(spec: RunSpec, analysis: dict) -> R.AnalysisData:
    """A finished analysis of the steps it asks for (None: the last), with made-up values of
    the right shape: a surface is a bowl over its grid, a spectrum positive definite."""
    from server.analysis_spec import AnalysisSpec

    a = AnalysisSpec.model_validate(analysis)
    step: dict = {"values": {}}
    if a.kind == "spectrum":
        step["values"]["spectrum"] = {
            "top_eigenvalues": [1.0] * a.spectrum.top_k, "trace": 1.0, "gradient_share": 0.5,
            "density": {"x": [0.0, 1.0], "y": [1.0, 1.0]},
            "slq": {"nodes": [[0.0, 1.0]] * a.spectrum.slq_vectors}}
    elif a.y_axis() is not None:
        xs, ys = a.x_axis().values(), a.y_axis().values()
        step.update(x=xs, y=ys, loss=[[1.0 + x * x + y * y for x in xs] for y in ys])
    steps = a.steps if a.steps is not None else [spec.steps]
    return R.AnalysisData(a.kind, a.bn_mode, a.model_dump(mode="json"),
                          {t: step for t in steps})


def synthetic(spec: RunSpec, gp: float = 1.0, beta: float = 1.0,
              analyses: tuple[dict, ...] = ()) -> R.RunData:
    """A finished run carrying every key a check reads, with flat made-up values (and the
    given analyses, from synthetic_analysis)."""
    steps = list(range(0, spec.steps, max(1, spec.steps // 20)))
    flat = (steps, [1.0] * len(steps))
    series = {k: flat for k in ("train/loss", "train/acc", "test/acc", "landscape/loss_min",
                                "landscape/grad_dist_min", "sharpness/top_eig")}
    series["landscape/loss_max"] = (steps, [2.0] * len(steps))
    series["landscape/grad_dist_max"] = (steps, [gp] * len(steps))
    series["landscape/beta"] = (steps, [beta] * len(steps))
    for i in spec.probes.ics.layers:
        series[f"ics/L{i}/l2"] = flat
    for k in range(1, len(spec.layer_widths()) + 1):
        for m in ("mean", "var"):
            series[f"act/L{k}/unit_{m}"] = (steps, [1.0 + 0.01 * t for t in range(len(steps))])
    etas = [R.EtaPoint(t, m, m * spec.lr, 1.0, gp * m) for t in steps
            for m in spec.probes.landscape.multipliers]
    return R.RunData(spec.model_dump(mode="json"), series, "succeeded", etas, "",
                     [synthetic_analysis(spec, a) for a in analyses])


@pytest.mark.parametrize("scale", R.SCALES)
def test_every_claim_finds_its_runs_and_keys(scale):
    for fig in R.figures_for(scale):
        plan = R.EXPERIMENTS[fig.experiment].plans[scale]
        runs = [synthetic(s, analyses=plan.analyses or ()) for s in plan.specs()]
        assert R.select_runs(fig, runs), fig.id
        for claim, outcome in R.evaluate(fig, runs).outcomes:
            assert outcome.ok is not None, (scale, fig.id, claim.id, outcome.ours)


def test_paper_scale_has_no_mlp_stand_in_and_quick_has_every_figure():
    assert "4-mlp" not in {f.id for f in R.figures_for("paper")}
    assert {f.id for f in R.figures_for("quick")} == {f.id for f in R.FIGURES}


# -- the checks decide right --------------------------------------------------------------------


def dln_runs(none_gp: float, bn_gp: float, bn_beta_spike: float = 1.0) -> list[R.RunData]:
    specs = R.EXPERIMENTS["dln-landscape"].plans["quick"].specs(seed=0)
    out = []
    for s in specs:
        run = synthetic(s, gp=none_gp if s.norm == "none" else bn_gp,
                        beta=none_gp if s.norm == "none" else bn_gp)
        if s.norm == "batch":
            steps, values = run.series["landscape/beta"]
            run.series["landscape/beta"] = (steps, [*values[:-1], values[-1] * bn_beta_spike])
        out.append(run)
    return out


def test_gap_claims_hold_only_past_a_hundredfold():
    fig = R.FIGURE_BY_ID["10"]
    held = dict((c.id, o) for c, o in R.evaluate(fig, dln_runs(1e8, 1e5)).outcomes)
    assert held["10b"].ok and held["10c"].ok and held["10b"].values["ratio"] == 1e3
    short = dict((c.id, o) for c, o in R.evaluate(fig, dln_runs(5e6, 1e5)).outcomes)
    assert short["10b"].ok is False and short["10c"].ok is False
    assert R.evaluate(fig, dln_runs(5e6, 1e5)).verdict == "partly"


def test_flatness_fails_on_a_spike():
    c = R.claim("10c-flat")
    assert c.evaluate(dln_runs(1e8, 1e5)).ok
    assert c.evaluate(dln_runs(1e8, 1e5, bn_beta_spike=1e3)).ok is False


def test_an_infinite_peak_counts_and_nan_is_ignored():
    assert R.peak([1.0, math.nan, 3.0]) == 3.0
    assert R.peak([1.0, math.inf]) == math.inf
    assert R.median([1.0, math.nan, math.inf, 3.0]) == 2.0
    runs = dln_runs(1.0, 1e5)
    steps, values = runs[0].series["landscape/grad_dist_max"]
    runs[0].series["landscape/grad_dist_max"] = (steps, [*values[:-1], math.inf])
    assert R.claim("10b").evaluate(runs).ok


def test_missing_runs_and_unfinished_runs_are_no_data():
    runs = dln_runs(1e8, 1e5)
    fig = R.FIGURE_BY_ID["10"]
    assert R.evaluate(fig, runs[1:]).verdict == "partly"  # 10c-flat is decidable without none
    assert R.evaluate(fig, []).verdict == "no data"
    runs[0].status = "running"
    out = R.claim("10b").evaluate(runs)
    assert out.ok is None and "running" in out.ours


def test_verdicts():
    assert R.verdict_of([True, True]) == "reproduced"
    assert R.verdict_of([True, False]) == "partly"
    assert R.verdict_of([False, False]) == "not reproduced"
    assert R.verdict_of([None, None]) == "no data"
    assert R.verdict_of([True, None]) == "partly"
    assert R.verdict_of([False, None]) == "no data"


def vgg_runs(acc: dict[tuple[str, float], float], diverged: tuple = ()) -> list[R.RunData]:
    out = []
    for s in R.EXPERIMENTS["vgg-lr"].plans["quick"].specs(seed=0):
        run = synthetic(s)
        a = acc[(s.norm, s.lr)]
        run.series["test/acc"] = ([0, s.steps], [0.1, a])
        if (s.norm, s.lr) in diverged:
            run.status = "diverged"
        out.append(run)
    return out


def test_fig1_accuracy_claims():
    paper = {("none", 0.1): 0.80, ("batch", 0.1): 0.83, ("none", 0.5): 0.1, ("batch", 0.5): 0.8}
    assert R.evaluate(R.FIGURE_BY_ID["1"], vgg_runs(paper)).verdict == "reproduced"
    stuck = {**paper, ("none", 0.1): 0.09}
    held = {c.id: o.ok for c, o in R.evaluate(R.FIGURE_BY_ID["1"], vgg_runs(stuck)).outcomes}
    assert held == {"1-both-train": False, "1-bn-better": True, "1-high-lr": True}
    trains = {**paper, ("none", 0.5): 0.7}
    assert R.claim("1-high-lr").evaluate(vgg_runs(trains)).ok is False
    assert R.claim("1-high-lr").evaluate(vgg_runs(trains, diverged=(("none", 0.5),))).ok


def test_fig5b_order():
    runs = [synthetic(s) for s in R.EXPERIMENTS["dln-lp"].plans["quick"].specs(seed=0)]
    final = {"l1": 1e2, "batch": 4.5e2, "l2": 5e2, "linf": 9.5e2, "none": 1.7e3}
    for r in runs:
        steps = r.series["train/loss"][0]
        r.series["train/loss"] = (steps, [final[r.spec["norm"]]] * len(steps))
    assert R.claim("5b-order").evaluate(runs).ok
    assert R.claim("5b-norms-help").evaluate(runs).ok
    final["linf"] = 2e3
    for r in runs:
        steps = r.series["train/loss"][0]
        r.series["train/loss"] = (steps, [final[r.spec["norm"]]] * len(steps))
    assert R.claim("5b-order").evaluate(runs).ok is False
    assert R.claim("5b-norms-help").evaluate(runs).ok is False


def test_run_data_from_api_reads_non_finite_strings_and_refuses_buckets():
    run = {"spec": {"norm": "none", "lr": 0.1}, "status": "diverged", "name": "x"}
    metrics = {"series": {"train/loss": {"key": "train/loss", "downsampled": False,
                                         "steps": [0, 1, 2], "values": [2.3, "Infinity", "NaN"]}}}
    probes = {"records": [{"probe": "landscape", "step": 0, "multiplier": 0.5, "eta": 0.05,
                           "loss": "NaN", "grad_dist": 1.5}]}
    d = R.run_data_from_api(run, metrics, probes)
    assert d.series["train/loss"][1][:2] == [2.3, math.inf]
    assert math.isnan(d.values("train/loss")[2])
    assert d.etas[0].grad_dist == 1.5 and math.isnan(d.etas[0].loss)
    metrics["series"]["train/loss"]["downsampled"] = True
    with pytest.raises(ValueError, match="downsampled"):
        R.run_data_from_api(run, metrics)


def test_reports_name_every_claim():
    results = R.evaluate_all("quick", {"dln-landscape": dln_runs(1e8, 1e5)})
    text = R.report_text(results, "quick")
    md = R.report_markdown(results, "quick")
    for res in results:
        assert f"Fig {res.figure.id} " in text and f"**Fig {res.figure.id}**" in md
    headings = [ln for ln in text.splitlines() if ln.startswith("Fig ")]
    assert headings == [f"Fig {r.figure.id} ({r.figure.model}) {r.figure.title}: "
                        f"{r.verdict.upper()}" for r in results]
    assert "Fig 3b (DLN) ICS with and without BN: NO DATA" in headings


def test_a_failed_premise_makes_the_figure_not_reproduced():
    fig = R.FIGURE_BY_ID["4"]
    trained = {("none", 0.1): 0.8, ("batch", 0.1): 0.83, ("none", 0.5): 0.1, ("batch", 0.5): 0.8}
    runs = vgg_runs(trained)
    for r in runs:  # without BN: a wider band, worse predictiveness, higher beta spikes
        scale = 10.0 if r.spec["norm"] == "none" else 1.0
        for key in ("landscape/loss_max", "landscape/grad_dist_max", "landscape/beta"):
            steps, values = r.series[key]
            r.series[key] = (steps, [v * scale for v in values])
    res = R.evaluate(fig, runs)
    assert res.outcomes[0][0] is fig.premise and res.verdict == "reproduced"
    stuck = vgg_runs({**trained, ("none", 0.1): 0.09})
    for a, b in zip(stuck, runs, strict=True):
        a.series.update({k: v for k, v in b.series.items() if k.startswith("landscape/")})
    res = R.evaluate(fig, stuck)
    assert res.outcomes[0][1].ok is False and res.verdict == "not reproduced"
    assert all(o.ok for c, o in res.outcomes[1:])  # the landscape claims alone would pass


def test_final_losses_within_one_percent_are_a_tie_not_a_win():
    runs = [synthetic(s) for s in R.EXPERIMENTS["dln-lp"].plans["quick"].specs(seed=0)]
    final = {"l1": 10483.0, "batch": 5711.0, "l2": 5711.0, "linf": 9000.0, "none": 10495.0}
    for r in runs:
        steps = r.series["train/loss"][0]
        r.series["train/loss"] = (steps, [final[r.spec["norm"]]] * len(steps))
    out = R.claim("5b-norms-help").evaluate(runs)
    assert out.ok is False and "(l1 within 1 % of none or above)" in out.ours
    assert R.lower(5711.0, 10495.0) and not R.lower(10483.0, 10495.0)


def test_figures_select_their_runs_from_api_specs():
    fig4 = R.FIGURE_BY_ID["4"]
    specs = [s.model_dump(mode="json")
             for s in R.EXPERIMENTS["vgg-lr"].plans["cpu"].specs(seed=0)]
    assert sorted((s["norm"], s["lr"]) for s in specs if R.uses(fig4, s)) == [
        ("batch", 0.1), ("none", 0.1)]  # one seed's runs
    fig11 = R.FIGURE_BY_ID["11"]
    specs = [s.model_dump(mode="json")
             for s in R.EXPERIMENTS["dln-landscape"].plans["cpu"].specs(seed=0)]
    assert sorted(s["norm"] for s in specs if R.uses(fig11, s)) == ["batch", "none"]
    assert all(R.uses(R.FIGURE_BY_ID["10"], s) for s in specs)


# -- seeds and papers ----------------------------------------------------------------------------


def test_every_figure_judged_over_three_identical_seeds_is_judged_as_one():
    """The same runs in seeds 0, 1, 2: every claim is decided in 3 of 3 seeds with the one
    seed's status and numbers (median = range = the value), and the verdicts do not move."""
    for fig in R.figures_for("quick"):
        plan = R.EXPERIMENTS[fig.experiment].plans["quick"]
        # One seed's runs (a plan may already vary the seed), then the same in seeds 0, 1, 2.
        specs = [s for s in plan.specs() if s.seed == plan.seeds[0]]
        analyses = plan.analyses or ()
        one = R.evaluate(fig, [synthetic(s, analyses=analyses) for s in specs])
        three = R.evaluate(fig, [synthetic(s.model_copy(update={"seed": k}), analyses=analyses)
                                 for k in (0, 1, 2) for s in specs])
        assert three.verdict == one.verdict, fig.id
        for (c1, o1), (c3, o3) in zip(one.outcomes, three.outcomes, strict=True):
            assert c1 is c3 and (o3.k, o3.n) == (3 * o1.k, 3), (fig.id, c1.id)
            assert o3.status == o1.status and o3.values == o1.values
            assert o3.ours.startswith(f"holds in {3 * o1.k} of 3 seeds")
            assert all(sp.lo == sp.median == sp.hi for sp in o3.spread.values()
                       if not math.isnan(sp.median))


def test_the_registry_finds_each_paper_module_and_refuses_clashes():
    from server.reproduction import registry

    keys = [p.key for p in R.PAPERS]  # every paper module, in name order
    assert keys == sorted(keys)
    assert {"cohen2021", "ghorbani2019", "li2018", "santurkar2018"} <= set(keys)
    assert R.paper_of(R.FIGURE_BY_ID["3b"]).title == "Santurkar et al. 2018"
    assert set(R.EXPERIMENTS) == {e.key for p in R.PAPERS for e in p.experiments}
    registry._unique("figure", [("1", "a2019"), ("2", "a2019")])
    with pytest.raises(ValueError, match="figure '1' is defined by both a2019 and b2020"):
        registry._unique("figure", [("1", "a2019"), ("1", "b2020")])
    assert registry.PAPER_MODULE.fullmatch("ghorbani2019")
    assert not registry.PAPER_MODULE.fullmatch("verdicts")
