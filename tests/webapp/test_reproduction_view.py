"""The Reproduction page's pure parts, without an API: verdict badges, the newest experiment per
catalogue entry and scale, the plots a figure gets, and a figure's card (verdict, claims with
both values per seed, why it differs, what to run, its plots and links) from an experiment's
RunData built by hand."""

from __future__ import annotations

from typing import Any

import pytest

from server import reproduction as R
from tests.webapp.reproduction_helpers import (
    MLP,
    STEPS,
    badge,
    graphs,
    nodes,
    run_json,
    series,
    text,
)
from webapp import reproduction_data as data
from webapp import reproduction_view as view
from webapp.client import Series
from webapp.compare.data import Cursor, Fetched
from webapp.style import VERDICT_COLORS


def run_data(spec: dict[str, Any], v: dict[str, Any], status: str = "succeeded") -> R.RunData:
    return R.RunData(spec, {k: (list(range(STEPS)), vals)
                            for k, vals in series(v, spec.get("seed", 0)).items()},
                     status)


def mlp_specs(scale: R.Scale = "quick") -> list[dict[str, Any]]:
    return [s.model_dump(mode="json") for s in R.EXPERIMENTS["mlp-landscape"].plans[scale]
            .specs()]


def loaded_mlp(values: dict[str, dict[str, Any]], status: str = "succeeded") -> data.Loaded:
    """The MLP stand-in's experiment as `load` returns it, built by hand (no plots fetched)."""
    runs = [run_json(i + 1, s, status) for i, s in enumerate(mlp_specs())]
    exp = {"id": 7, "name": R.EXPERIMENTS["mlp-landscape"].name("quick"), "runs": runs}
    fetched = {}
    for r in runs:
        checks = run_data(r["spec"], values[r["spec"]["norm"]], status)
        # What the plots draw: the same series (short enough to come back raw).
        plot = Fetched({k: Series(k, list(steps), list(vals))
                        for k, (steps, vals) in checks.series.items()}, [], [], Cursor())
        fetched[r["id"]] = data.RunFetch(checks, plot)
    return data.Loaded("quick", {"mlp-landscape": exp}, fetched)


@pytest.mark.parametrize("verdict", list(VERDICT_COLORS))
def test_the_verdict_badge_says_it_in_its_colour(verdict):
    b = view.verdict_badge(verdict)
    assert b.children == verdict
    assert b.style["backgroundColor"] == VERDICT_COLORS[verdict]
    assert len(set(VERDICT_COLORS.values())) == len(view.VERDICTS) == 4


def test_the_newest_experiment_per_figure_and_scale_is_chosen():
    mlp, vgg = R.EXPERIMENTS["mlp-landscape"], R.EXPERIMENTS["vgg-lr"]
    listed = [  # the API lists newest first
        {"id": 9, "name": mlp.name("cpu")},
        {"id": 8, "name": "my own experiment"},
        {"id": 6, "name": vgg.name("quick")},
        {"id": 5, "name": "repro: not in the catalogue [quick]"},
        {"id": 4, "name": mlp.name("quick")},
        {"id": 2, "name": mlp.name("quick")},
        {"id": 11, "name": mlp.name("quick")},  # out of order: the id decides, not the place
    ]
    by_scale = data.latest(listed)
    assert list(by_scale) == ["quick", "cpu"]  # the catalogue's scale order
    assert {k: e["id"] for k, e in by_scale["quick"].items()} == {"mlp-landscape": 11,
                                                                  "vgg-lr": 6}
    assert by_scale["cpu"]["mlp-landscape"]["id"] == 9
    assert data.default_scale(by_scale) == "quick"  # holds the newest (11)
    assert data.default_scale(data.latest(listed[:-1])) == "cpu"
    assert data.latest([{"id": 1, "name": "bn vs plain"}]) == {}
    assert data.default_scale({}) is None


def test_activation_figures_get_a_plot_per_layer_the_paper_shows():
    fig9, fig8 = R.FIGURE_BY_ID["9"], R.FIGURE_BY_ID["8"]
    assert data.plots_of(fig9) == [data.Plot("dist_heat", k, "layer") for k in (1, 11, 24)]
    assert data.plots_of(fig8) == [data.Plot("dist_overlay", k, "unit") for k in (3, 6)]
    assert data.plots_of(R.FIGURE_BY_ID["10"]) == [data.Plot(n) for n in
                                                   ("landscape", "gradpred", "beta")]


def test_a_reproduced_figure_shows_both_values_per_claim_and_no_reason():
    loaded = loaded_mlp(MLP)
    [result] = [r for r in view.results(loaded) if r.figure.id == "4-mlp"]
    assert result.verdict == "reproduced"
    section = view.figure_section(result, loaded, "/dash/")
    assert badge(section) == "reproduced"
    rows = [n for n in nodes(section) if n["type"] == "Tr"][1:]  # the head row aside
    assert len(rows) == 1 + len(result.figure.claims)  # the premise first
    words = text(section)
    for claim, outcome in result.outcomes:
        assert claim.paper in words and outcome.ours in words and claim.statistic in words
    # Three seeds: each claim "holds in k of 3", its numbers' median (range) over seeds, each
    # seed's own sentence on hover.
    gap = dict(result.outcomes)[R.claim("4b")]
    assert "holds in 3 of 3 seeds" in words and "ratio 10 (5 to 15)" in gap.ours
    assert gap.ours in words
    hover = next(n["props"]["title"] for n in nodes(section) if n["type"] == "Td"
                 and n["props"].get("children") == gap.ours)
    assert hover.splitlines() == [
        f"seed {k}: holds · peak gradient predictiveness: {10 * (k + 1)} without BN, 2 with "
        f"BN ({5 * (k + 1)}x)" for k in (0, 1, 2)]
    assert "Why it differs" not in words
    assert R.EXPERIMENTS["mlp-landscape"].data["quick"] in words
    for choice in result.figure.choices:
        assert choice in words
    link = next(n for n in nodes(section) if n["type"] == "Link")
    assert link["props"]["href"] == "/dash/experiments/7"
    # Our plots: the figure's own builders, one per plot it names, the runs in the legend
    # (loaded without seed groups: every seed's run).
    figs = graphs(section)
    assert len(figs) == len(result.figure.plots) == 3
    assert [t["name"] for t in figs[2]["data"] if t.get("showlegend")] == [
        f"{norm} · seed {k}" for norm in ("no normalisation", "BatchNorm") for k in (0, 1, 2)]
    seeds_link = next(n for n in nodes(section) if n["props"].get("className") ==
                      "repro-seeds-link")
    assert seeds_link["props"]["href"] == "/dash/compare?runs=1,2,3,4,5,6&group=0"


def test_a_failed_premise_says_why_and_missing_runs_say_what_to_run():
    values = {**MLP, "none": {**MLP["none"], "acc": 0.1}}  # the plain net stays at chance
    loaded = loaded_mlp(values)
    result = R.evaluate(R.FIGURE_BY_ID["4-mlp"], loaded.run_data("mlp-landscape"))
    assert result.verdict == "not reproduced"
    why = view.reasons(result, loaded.experiments["mlp-landscape"], "quick")
    assert why == ["The paper's setting does not hold here, so its comparison does not apply: "
                   "both nets train at LR 0.1, as in the paper's Fig 1 fails (holds in 0 of 3 "
                   "seeds; median (range) over seeds: none 0.1 (0.1 to 0.1); batch 0.9 (0.9 to "
                   "0.9))."]
    assert why[0] in text(view.figure_section(result, loaded))
    # A figure of an experiment not run at this scale: no data, and the command to run it.
    other = R.evaluate(R.FIGURE_BY_ID["2"], [])
    assert other.verdict == "no data"
    assert view.reasons(other, None, "quick") == [
        "Not run at scale quick yet: `landscope reproduce --quick --only vgg-noisy`."]
    assert view.reasons(other, None, "cpu")[0].endswith(
        "`landscope reproduce --scale cpu --only vgg-noisy`.")


def test_runs_still_training_leave_claims_undecided():
    loaded = loaded_mlp(MLP, status="running")
    [result] = [r for r in view.results(loaded) if r.figure.id == "4-mlp"]
    assert result.verdict == "no data"
    why = view.reasons(result, loaded.experiments["mlp-landscape"], "quick")
    assert why and all(w.startswith("Not decided yet: run ") and "is running" in w
                       for w in why)
    assert not loaded.finished
    assert "0 of 6 runs finished" in text(view.summary([result], loaded))
