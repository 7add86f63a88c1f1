"""Cohen et al. 2021 (edge of stability): the checks against hand-made sharpness and loss
series whose verdict is known by construction, and the quick experiment end to end."""

from __future__ import annotations

import math

import pytest
import torch

from server import reproduction as R
from server.reproduction import cohen2021 as C
from server.reproduction.runs import MissingData, RunData
from server.reproduction.verdicts import evaluate
from worker.engine.sink import MemorySink
from worker.engine.trainer import Trainer

EVERY = 10  # probe spacing of the synthetic runs


def run(lr: float, ratios: list[float], loss: list[float] | None = None, *, norm: str = "none",
        seed: int = 0, status: str = "succeeded") -> RunData:
    """A run whose sharpness is ratios[i] * 2/lr at step i * EVERY and whose loss is `loss`
    at every step (default: a falling loss with a 5 % rise every 7th step)."""
    n = len(ratios) * EVERY
    if loss is None:
        loss = [2.0 * math.exp(-t / n) * (1.05 if t % 7 == 6 else 1.0) for t in range(n)]
    return RunData({"lr": lr, "norm": norm, "seed": seed},
                   {C.SHARPNESS: ([i * EVERY for i in range(len(ratios))],
                                  [r * 2 / lr for r in ratios]),
                    C.LOSS: (list(range(len(loss))), list(loss))}, status)


RISE_THEN_EDGE = [0.2, 0.4, 0.6, 0.8, 1.0, 1.05, 0.95, 1.1, 1.0, 1.02, 0.98, 1.05]
FAR_ABOVE = [0.2, 0.4, 0.6, 0.8, 1.0, 1.5, 2.0, 2.5, 3.0, 3.0, 3.0, 3.0]
FLAT_LOW = [0.3] * 12


def test_a_series_rising_to_the_edge_and_hovering_there_holds_every_claim():
    runs = [run(0.1, RISE_THEN_EDGE), run(0.4, RISE_THEN_EDGE)]
    s, e, loss = C.check_sharpening(runs), C.check_edge(runs), C.check_loss(runs)
    assert s.ok and e.ok and loss.ok, (s.ours, e.ours, loss.ours)
    assert s.values["eta0.1/start"] == pytest.approx(0.2)
    assert s.values["eta0.4/reached_at"] == 4 * EVERY  # the first probe at >= 0.9
    # The phase from probe 4: 1.0, 1.05, 0.95, 1.1, 1.0, 1.02, 0.98, 1.05 -> median 1.01
    assert e.values["eta0.1/median"] == pytest.approx(1.01)


def test_a_sharpness_far_above_the_edge_fails_the_edge_claim_only():
    runs = [run(0.2, FAR_ABOVE)]
    assert C.check_sharpening(runs).ok  # it did rise to the edge
    out = C.check_edge(runs)
    assert out.ok is False
    assert out.values["eta0.2/median"] == pytest.approx(2.75)  # 1.0 ... 3.0: 8 values


def test_a_sharpness_that_never_rises_fails_progressive_sharpening_and_the_rest():
    runs = [run(0.2, FLAT_LOW)]
    out = C.check_sharpening(runs)
    assert out.ok is False and "never" in out.ours
    assert math.isnan(out.values["eta0.2/reached_at"])
    assert C.check_edge(runs).ok is False
    assert C.check_loss(runs).ok is False


def test_a_run_that_starts_at_the_edge_shows_no_sharpening():
    assert C.check_sharpening([run(0.2, [1.0] * 12)]).ok is False
    assert C.check_edge([run(0.2, [1.0] * 12)]).ok  # it does sit at the edge


def test_the_edge_band_and_its_bounds():
    assert C.hovers(0.9, 5) and C.hovers(1.2, 5)
    assert not C.hovers(0.89, 5) and not C.hovers(1.21, 5)
    assert not C.hovers(1.0, C.MIN_EOS_PROBES - 1)  # too short a phase to hover
    late = [0.2] * 9 + [1.0, 1.0, 1.0]  # reaches the edge 3 probes before the end
    assert C.hover(late) == (1.0, 3)
    assert C.check_edge([run(0.2, late)]).ok is False


def test_every_eta_must_hold():
    runs = [run(0.1, RISE_THEN_EDGE), run(0.2, FLAT_LOW), run(0.4, RISE_THEN_EDGE)]
    assert C.check_sharpening(runs).ok is False
    assert C.check_edge([run(0.1, RISE_THEN_EDGE), run(0.4, FAR_ABOVE)]).ok is False


def test_a_monotone_loss_fails_non_monotonicity_and_a_rising_loss_fails_decrease():
    n = len(RISE_THEN_EDGE) * EVERY
    smooth = [2.0 * math.exp(-t / n) for t in range(n)]
    out = C.check_loss([run(0.2, RISE_THEN_EDGE, smooth)])
    assert out.ok is False and out.values["eta0.2/largest_rise"] == 0.0
    # Oscillating (10 % up and down) around a level that does not fall over the phase
    stuck = [1.0 * (1.1 if t % 2 else 1.0) for t in range(n)]
    out = C.check_loss([run(0.2, RISE_THEN_EDGE, stuck)])
    assert out.ok is False and out.values["eta0.2/largest_rise"] == pytest.approx(0.1)


def test_a_diverged_run_fails():
    runs = [run(0.2, RISE_THEN_EDGE, status="diverged")]
    assert C.check_edge(runs).ok is False and C.check_loss(runs).ok is False
    assert "diverged" in C.check_edge(runs).ours


def test_missing_series_or_unfinished_runs_leave_the_claim_undecided():
    bare = RunData({"lr": 0.2, "norm": "none", "seed": 0}, {})
    assert C.SHARPENS.evaluate([bare]).ok is None
    assert C.HOVERS.evaluate([run(0.2, RISE_THEN_EDGE, status="running")]).ok is None
    assert C.LOSS_FALLS.evaluate([]).ok is None


def test_window_medians_and_largest_rise_by_hand():
    assert C.window_medians([4, 3, 2, 1, 8, 7, 6, 5], 4) == [3.5, 1.5, 7.5, 5.5]
    assert C.window_medians([1, 2, 3, 4, 5], 2) == [1.5, 4]  # cuts at round(2.5) = 2
    with pytest.raises(MissingData):
        C.window_medians([1, 2, 3], 4)
    assert C.largest_rise([1.0, 2.0, 1.0, 1.5]) == pytest.approx(1.0)
    assert C.largest_rise([3.0, 2.0, 1.0]) == 0.0


def test_figures_judge_each_norm_over_seeds():
    runs = [run(lr, RISE_THEN_EDGE, norm="none", seed=s) for lr in (0.2, 0.4) for s in (0, 1)]
    runs += [run(lr, FAR_ABOVE, norm="batch", seed=s) for lr in (0.2, 0.4) for s in (0, 1)]
    c1, c2 = (evaluate(R.FIGURE_BY_ID[f], runs) for f in ("C1", "C2"))
    assert c1.verdict == "reproduced"
    assert c2.verdict == "partly"  # sharpening and loss hold, the edge claim does not
    assert [o.n for _, o in c1.outcomes] == [2, 2, 2]


def test_the_paper_is_in_the_catalogue_at_both_scales():
    paper = R.PAPER_BY_KEY["cohen2021"]
    assert {f.id for f in R.figures_for("quick")} >= {"C1", "C2"}
    for scale in ("quick", "cpu"):
        specs = R.EXPERIMENTS["cohen-eos"].plans[scale].specs(device="cpu")
        assert all(s.batch_size is None and s.probes.sharpness.every > 0 for s in specs)
        assert {s.seed for s in specs} == set(R.SEEDS[scale])
        assert {s.norm for s in specs} == {"none", "batch"}
    assert paper.summary and paper.citation


@pytest.mark.slow
def test_quick_run_end_to_end_sharpens_to_the_edge(tmp_path):
    """The quick plan's run without BN at eta 0.4, seed 0, cut to 200 steps: the sharpness
    starts well below 2/eta and reaches it (about step 100 at full length)."""
    spec = next(s for s in R.EXPERIMENTS["cohen-eos"].plans["quick"].specs(
        device="cpu", steps=200, seed=0) if s.norm == "none" and s.lr == 0.4)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        sink = MemorySink()
        result = Trainer(spec, tmp_path).run(sink)
    finally:
        torch.set_num_threads(threads)
    data = R.run_data_from_memory(spec.model_dump(mode="json"), sink, result.status)
    out = C.check_sharpening([data])
    assert out.ok, out.ours
    assert C.check_edge([data]).ok is not None  # decidable from the engine's own series
