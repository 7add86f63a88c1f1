"""Claims judged per seed (server/reproduction/verdicts.py): "holds in k of n seeds", the
median and range of each number, and the figure verdicts the k-of-n rules give, on made-up
per-seed numbers whose answers are known."""

from __future__ import annotations

import math

import pytest

from server import reproduction as R
from server.reproduction.verdicts import by_seed, combine, status_of, verdict_from

RATIO = 2.0  # the made-up claim: x of the "none" run is at least twice x of the "batch" run


def _ratio_claim(runs: list[R.RunData]) -> R.Outcome:
    none = R.pick(runs, norm="none").values("x")[-1]
    bn = R.pick(runs, norm="batch").values("x")[-1]
    r = R.ratio(none, bn)
    return R.Outcome(r >= RATIO, f"ratio {R.fmt(r)}", {"none": none, "batch": bn, "ratio": r})


def _acc_premise(runs: list[R.RunData]) -> R.Outcome:
    acc = min(R.pick(runs, norm=n).values("acc")[-1] for n in ("none", "batch"))
    return R.Outcome(acc >= 0.5, f"accuracy {acc:.0%}", {"acc": acc})


RATIO_CLAIM = R.Claim("t-ratio", "none is at least twice batch", "2x", "last x", _ratio_claim)
ALWAYS = R.Claim("t-always", "the runs exist", "-", "-",
                 lambda runs: R.Outcome(bool(R.pick(runs, norm="none")), "exists"))
PREMISE = R.Claim("t-premise", "premise: both train", "-", "last acc >= 50 %", _acc_premise)
FIG = R.Figure("t", "test figure", "MLP", "none", (RATIO_CLAIM,))
FIG2 = R.Figure("t2", "two claims", "MLP", "none", (RATIO_CLAIM, ALWAYS))
FIG_P = R.Figure("tp", "with a premise", "MLP", "none", (RATIO_CLAIM,), premise=PREMISE)


def run(seed: int | None, norm: str, x: float, acc: float = 0.9,
        status: str = "succeeded") -> R.RunData:
    spec = {"norm": norm, "lr": 0.1} | ({} if seed is None else {"seed": seed})
    return R.RunData(spec, {"x": ([0, 1], [0.0, x]), "acc": ([0, 1], [0.1, acc])}, status)


def seeds(ratios: dict[int, float], accs: dict[int, float] | None = None) -> list[R.RunData]:
    """One none/batch pair per seed, batch's x = 1 so that the pair's ratio is `ratios[seed]`."""
    accs = accs or {}
    return [r for s, q in ratios.items()
            for r in (run(s, "none", q, accs.get(s, 0.9)), run(s, "batch", 1.0))]


def outcome(fig: R.Figure, runs: list[R.RunData], claim_id: str = "t-ratio") -> R.Outcome:
    return {c.id: o for c, o in R.evaluate(fig, runs).outcomes}[claim_id]


@pytest.mark.parametrize("k,n,status", [(0, 0, "no data"), (1, 1, "holds"), (0, 1, "fails"),
                                        (3, 3, "holds"), (0, 3, "fails"), (1, 3, "mixed"),
                                        (2, 3, "mixed"), (4, 5, "mixed")])
def test_the_k_of_n_rule(k, n, status):
    assert status_of(k, n) == status


def test_one_seed_is_the_check_itself():
    runs = seeds({0: 3.0})
    o = outcome(FIG, runs)
    direct = _ratio_claim(runs)
    assert (o.ok, o.ours, o.values) == (direct.ok, direct.ours, direct.values)
    assert (o.k, o.n, o.status, o.final) == (1, 1, "holds", True)
    assert R.evaluate(FIG, runs).verdict == "reproduced"
    assert R.evaluate(FIG, seeds({0: 1.5})).verdict == "not reproduced"


def test_holds_in_every_seed_with_median_and_range():
    o = outcome(FIG, seeds({0: 3.0, 1: 2.5, 2: 10.0}))
    assert (o.ok, o.k, o.n, o.status) == (True, 3, 3, "holds")
    assert o.ours.startswith("holds in 3 of 3 seeds")
    assert o.values["ratio"] == 3.0  # the median of 2.5, 3, 10
    sp = o.spread["ratio"]
    assert (sp.median, sp.lo, sp.hi, sp.n) == (3.0, 2.5, 10.0, 3)
    assert "ratio 3 (2.5 to 10)" in o.ours
    assert [s for s, _ in o.seeds] == [0, 1, 2]
    assert R.evaluate(FIG, seeds({0: 3.0, 1: 2.5, 2: 10.0})).verdict == "reproduced"


def test_two_of_three_is_mixed_never_holds():
    runs = seeds({0: 3.0, 1: 1.5, 2: 4.0})
    o = outcome(FIG, runs)
    assert (o.ok, o.k, o.n, o.status) == (False, 2, 3, "mixed")
    assert o.ours.startswith("holds in 2 of 3 seeds (not in seed 1)")
    assert R.evaluate(FIG, runs).verdict == "partly"


def test_none_of_three_fails():
    o = outcome(FIG, seeds({0: 1.0, 1: 1.5, 2: 1.9}))
    assert (o.ok, o.k, o.n, o.status) == (False, 0, 3, "fails")
    assert R.evaluate(FIG, seeds({0: 1.0, 1: 1.5, 2: 1.9})).verdict == "not reproduced"


def test_an_even_count_takes_the_middle_two():
    o = outcome(FIG, seeds({0: 2.0, 1: 3.0, 2: 5.0, 3: 9.0}))
    assert o.values["ratio"] == 4.0 and (o.spread["ratio"].lo, o.spread["ratio"].hi) == (2, 9)


def test_nan_numbers_are_left_out_and_infinite_ones_count():
    sp = R.spread([1.0, math.nan, math.inf])
    assert (sp.median, sp.lo, sp.hi, sp.n) == (math.inf, 1.0, math.inf, 2)
    assert R.spread([math.nan]).n == 0 and math.isnan(R.spread([]).median)
    o = outcome(FIG, [*seeds({0: 3.0, 1: 4.0}), run(2, "none", math.inf), run(2, "batch", 1.0)])
    assert o.status == "holds" and o.spread["ratio"].hi == math.inf


def test_an_unfinished_seed_is_not_counted_and_keeps_the_verdict_open():
    runs = [*seeds({0: 3.0, 1: 4.0}), run(2, "none", 3.0, status="running"),
            run(2, "batch", 1.0)]
    o = outcome(FIG, runs)
    assert (o.ok, o.k, o.n, o.status, o.final) == (True, 2, 2, "holds", False)
    assert "1 more not decided yet" in o.ours
    assert R.evaluate(FIG, runs).verdict == "partly"  # not "reproduced" while seed 2 runs
    failing = [*seeds({0: 1.0}), run(1, "none", 3.0, status="running"), run(1, "batch", 1.0)]
    assert R.evaluate(FIG, failing).verdict == "no data"  # nothing holds anywhere yet


def test_no_seed_decides():
    o = outcome(FIG, [run(0, "none", 3.0), run(1, "none", 3.0)])  # no batch runs
    assert (o.ok, o.n, o.status) == (None, 0, "no data") and "no run with" in o.ours
    assert R.evaluate(FIG, []).verdict == "no data"


def test_verdict_over_claims_mixes_statuses():
    runs = seeds({0: 3.0, 1: 4.0})
    assert R.evaluate(FIG2, runs).verdict == "reproduced"
    assert R.evaluate(FIG2, seeds({0: 1.0, 1: 1.0})).verdict == "partly"  # one holds, one fails
    one_fails = R.Outcome(False, "", seeds=((0, R.Outcome(False, "")),))
    mixed = combine([(0, R.Outcome(True, "")), (1, R.Outcome(False, ""))])
    holds = combine([(0, R.Outcome(True, "")), (1, R.Outcome(True, ""))])
    assert verdict_from([one_fails, one_fails]) == "not reproduced"
    assert verdict_from([mixed, mixed]) == "partly"
    assert verdict_from([holds, mixed]) == "partly"
    assert verdict_from([holds, holds]) == "reproduced"


def test_single_seed_verdicts_are_the_old_rule():
    cases = [(True, True), (True, False), (False, False), (True, None), (False, None),
             (None, None)]
    for oks in cases:
        outs = [combine([(0, R.Outcome(ok, ""))]) for ok in oks]
        assert verdict_from(outs) == R.verdict_of(list(oks)), oks


def test_a_premise_that_fails_everywhere_means_not_reproduced():
    runs = seeds({0: 3.0, 1: 3.0}, accs={0: 0.1, 1: 0.2})
    res = R.evaluate(FIG_P, runs)
    assert res.outcomes[0][1].status == "fails"
    assert res.outcomes[1][1].status == "holds"  # judged on every seed, shown
    assert res.verdict == "not reproduced"


def test_a_mixed_premise_restricts_the_seeds_and_caps_the_verdict():
    # Seed 1's nets do not train: its ratio (1.0) must not count against the claim.
    runs = seeds({0: 3.0, 1: 1.0, 2: 5.0}, accs={1: 0.1})
    res = R.evaluate(FIG_P, runs)
    premise, claim = res.outcomes[0][1], res.outcomes[1][1]
    assert premise.ours.startswith("holds in 2 of 3 seeds (not in seed 1)")
    assert [s for s, _ in claim.seeds] == [0, 2]
    assert (claim.k, claim.n, claim.status) == (2, 2, "holds")
    assert "judged on the 2 seeds where the premise does not fail" in claim.ours
    assert claim.values["ratio"] == 4.0
    assert res.verdict == "partly"  # every claim holds, but not in the paper's setting always


def test_runs_without_a_seed_are_one_group_after_the_seeded_ones():
    runs = [run(None, "none", 3.0), run(2, "none", 3.0), run(None, "batch", 1.0),
            run(0, "none", 1.0)]
    groups = by_seed(runs)
    assert list(groups) == [0, 2, None] and len(groups[None]) == 2


def test_the_report_marks_say_k_of_n():
    res = R.evaluate(FIG, seeds({0: 3.0, 1: 1.5, 2: 4.0}))
    assert R.mark(res.outcomes[0][1]) == "holds in 2 of 3 seeds"
    assert R.mark(outcome(FIG, seeds({0: 3.0, 1: 2.5, 2: 10.0}))) == "holds in 3 of 3 seeds"
    assert R.mark(outcome(FIG, seeds({0: 1.0, 1: 1.5}))) == "fails in 2 of 2 seeds"
    assert R.mark(outcome(FIG, seeds({0: 3.0}))) == "holds"  # one seed: the check's own word
    assert R.mark(outcome(FIG, seeds({0: 1.0}))) == "fails"
    assert R.mark(outcome(FIG, [run(0, "none", 3.0), run(1, "none", 3.0)])) == "no data"
    # Seed 2 still running: counted among neither k nor n.
    running = [*seeds({0: 3.0, 1: 4.0}), run(2, "none", 3.0, status="running"),
               run(2, "batch", 1.0)]
    assert R.mark(outcome(FIG, running)) == "holds in 2 of 2 seeds"


def test_the_text_and_markdown_reports_show_k_of_n_and_median_range():
    """Both tables of a three-seed figure: the mark says k of n, "ours" the median and range
    over seeds of each number (ratios 50, 300, 400: median 300, range 50 to 400)."""
    fig = R.FIGURE_BY_ID["10"]
    runs = [_dln(s, none_gp) for s, none_gp in ((0, 5e6), (1, 3e7), (2, 4e7))]
    res = R.evaluate(fig, [r for rs in runs for r in rs])
    by_id = {c.id: o for c, o in res.outcomes}
    assert R.mark(by_id["10b"]) == "holds in 2 of 3 seeds"  # seed 0: 5e6 / 1e5 = 50x < 100x
    text = R.report_text([res], "quick")
    md = R.report_markdown([res], "quick")
    assert "[holds in 2 of 3 seeds] gradient predictiveness is orders of magnitude" in text
    assert "ratio 300 (50 to 400)" in text
    assert "  seeds: 0, 1, 2, each claim judged per seed" in text
    row = next(ln for ln in md.splitlines() if "gradient predictiveness is orders" in ln)
    assert row.endswith("| holds in 2 of 3 seeds |") and "ratio 300 (50 to 400)" in row


def _dln(seed: int, none_gp: float) -> list[R.RunData]:
    """The DLN landscape runs of one seed: batch's predictiveness and beta peak at 1e5, the
    plain net's at `none_gp`."""
    out = []
    for norm in ("none", "batch", "noisy_batch"):
        v = none_gp if norm == "none" else 1e5
        spec = {"norm": norm, "lr": 1e-6, "seed": seed}
        series = {k: ([0, 1], [v, v]) for k in ("landscape/grad_dist_max", "landscape/beta")}
        series |= {"landscape/loss_min": ([0, 1], [1.0, 1.0]),
                   "landscape/loss_max": ([0, 1], [2.0 if norm == "none" else 1.5] * 2)}
        out.append(R.RunData(spec, series))
    return out


def test_a_check_handed_several_seeds_refuses_to_judge_the_first_alone():
    runs = seeds({0: 3.0, 1: 1.0})
    with pytest.raises(ValueError, match="several seeds"):
        RATIO_CLAIM.evaluate(runs)
    assert R.pick(runs, norm="none", seed=1).values("x")[-1] == 1.0  # a seed named is fine
    assert RATIO_CLAIM.evaluate(seeds({0: 3.0})).ok  # one seed: as before


PAIRED = ("dln-ics", "dln-lp", "dln-landscape", "mlp-landscape")


@pytest.mark.parametrize("scale", ["quick", "cpu"])
@pytest.mark.parametrize("key", PAIRED)
def test_plans_run_the_scales_seeds_and_vary_nothing_but_the_seed(key, scale):
    """Each seed gets the same runs (the plan's specs without the seed), the runs compared in
    one seed share it, and the seeds are the scale's (plans.SEEDS)."""
    plan = R.EXPERIMENTS[key].plans[scale]
    assert plan.seeds == R.SEEDS[scale] and len(plan.seeds) >= 3
    specs = plan.specs()
    one = [s.model_dump(exclude={"seed"}) for s in plan.specs(seed=0)]
    for k in plan.seeds:
        mine = [s.model_dump(exclude={"seed"}) for s in specs if s.seed == k]
        assert mine == one, (key, scale, k)
    assert len(specs) == len(one) * len(plan.seeds)
    # The body the server gets varies `seed` with exactly these values.
    assert plan.body("x")["vary"]["seed"] == list(R.SEEDS[scale])
    assert R.EXPERIMENTS[key].plans.get("paper", plan).seeds in (R.SEEDS["paper"], plan.seeds)
    # No claim reads an analysis: none requested (the presets' would triple with the seeds).
    assert plan.analyses == () and plan.body("x")["analyses"] == []
