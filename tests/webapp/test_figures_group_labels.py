"""A seed group is named in the legend as every figure names its normalisation
("BatchNorm (n=3)", never the API's key "batch (n=3)"): webapp/style.py group_label turns the
API's group label into the dashboard's words, and the view by seed group draws with it."""

from __future__ import annotations

import pytest

from tests.support.seeded import seeded_experiment
from webapp.compare import update as ctl
from webapp.style import NORM_LABELS, group_label, norm_label

SMALL = {"probes": {"landscape": {"every": 5}, "ics": {"every": 5, "layers": [3, 5]},
                    "activations": {"every": 10}, "sharpness": {"every": 20}}}


@pytest.mark.parametrize(("label", "shown"), [
    ("none", "no normalisation"),
    ("batch", "BatchNorm"),
    ("batch · lr=0.1", "BatchNorm · lr=0.1"),
    ("noisy_batch · lr=0.1 · width=64", "noisy BatchNorm · lr=0.1 · width=64"),
    ("linf · source=sdk", "ℓ∞ norm · source=sdk"),
    # Not a normalisation's key: a run's name (a lone group without one), or a value the
    # dashboard has no name for. Kept as they are.
    ("my-run", "my-run"),
    ("weird · lr=0.1", "weird · lr=0.1"),
    ("", ""),
])
def test_group_labels_name_the_normalisation_as_the_figures_do(label, shown):
    assert group_label(label) == shown


def test_every_normalisation_has_its_figure_name():
    assert {k: group_label(k) for k in NORM_LABELS} == NORM_LABELS


def test_the_view_by_seed_group_names_groups_as_the_single_view_names_runs(api):
    exp, _ = seeded_experiment(api.engine, steps=30, spec_changes=SMALL)
    r = ctl.update(api.client, ctl.FULL, {"experiment": exp}, None, ctl.Controls(group=True))
    assert r.state["derived"]
    for name in ("training", "landscape", "beta", "ics"):
        legend = [t["name"] for t in r.figures[name]["data"] if t.get("showlegend")
                  and str(t.get("legendgroup", "")).startswith("group-")]
        assert legend == [f"{norm_label('none')} (n=3)", f"{norm_label('batch')} (n=3)"], name
