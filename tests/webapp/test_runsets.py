"""Runs as the figures see them: one colour per normalisation everywhere, legend names that say
what differs, a facet cell per run (a column per normalisation, a row per other value)."""

from __future__ import annotations

from webapp.runsets import build_views, differing_keys, grid_of
from webapp.style import NORM_COLORS


def test_norm_by_lr_sweep_is_a_grid_with_columns_by_norm(run_json):
    runs = [run_json(1, "batch", lr=0.1), run_json(2, "none", lr=0.1),
            run_json(3, "batch", lr=0.5), run_json(4, "none", lr=0.5)]
    views = build_views(runs)
    # The baseline comes first, then the paper's order; ids break ties.
    assert [v.id for v in views] == [2, 4, 1, 3]
    assert {(v.norm, v.lr): (v.row, v.col) for v in views} == {
        ("none", 0.1): (0, 0), ("none", 0.5): (1, 0), ("batch", 0.1): (0, 1),
        ("batch", 0.5): (1, 1)}
    assert all(v.color == NORM_COLORS[v.norm] for v in views)
    assert [v.label for v in views][:2] == ["no normalisation · lr 0.1",
                                            "no normalisation · lr 0.5"]
    # Same normalisation, different lr: told apart by the dash, not the colour.
    assert [v.dash for v in views if v.norm == "batch"] == ["solid", "dash"]
    grid = grid_of(views)
    assert (grid.rows, grid.cols) == (2, 2)
    assert grid.titles == ["no normalisation · lr 0.1", "BatchNorm · lr 0.1",
                           "no normalisation · lr 0.5", "BatchNorm · lr 0.5"]


def test_many_norms_wrap_and_labels_are_plain_when_only_norm_differs(run_json):
    norms = ["none", "batch", "noisy_batch", "noise", "l1", "l2", "linf", "layer"]
    views = build_views([run_json(i + 1, n) for i, n in enumerate(norms)])
    assert [v.label for v in views][:2] == ["no normalisation", "BatchNorm"]
    assert [(v.row, v.col) for v in views] == [(0, 0), (0, 1), (0, 2), (0, 3),
                                               (1, 0), (1, 1), (1, 2), (1, 3)]
    assert len({v.color for v in views}) == 8


def test_the_same_spec_twice_gets_two_cells_and_spec_details_carry_over(run_json):
    views = build_views([run_json(1, "batch"), run_json(2, "batch")])
    assert {(v.row, v.col) for v in views} == {(0, 0), (1, 0)}
    v = views[0]
    assert v.ics_layers == (2, 3) and v.n_layers == 3 and v.act_bins == 8
    assert v.act_range == (-4.0, 4.0) and v.multipliers == (0.5, 1.0, 2.0, 4.0)
    assert v.classify and v.landscape_every == 10


def test_differing_keys_ignore_norm_and_device(run_json):
    a = run_json(1, "none")["spec"]
    b = {**run_json(2, "batch")["spec"], "device": "cuda", "seed": 3}
    assert differing_keys([a, b]) == ["seed"]


def test_views_round_trip_through_a_store(run_json):
    from webapp.runsets import RunView

    v = build_views([run_json(1, "l2", diverged_at=40)])[0]
    assert RunView.from_dict(v.to_dict()) == v and v.diverged_at == 40
