"""run.info["size"] (worker/engine/model_size.py): measured on the built network, it equals
the server's own tally for built-in models (server/cost.py, computed from the spec alone),
and it is what bounds an analysis of a plug-in run (server/analysis_cost.py)."""

from __future__ import annotations

import pytest
import torch

from server.analysis_cost import estimate_analysis, sizes
from server.analysis_spec import AnalysisSpec
from server.cost import UnknownCost, tally
from server.spec import RunSpec
from webapp.runsets import _layers, build_views
from worker.engine.trainer import Trainer

SPECS = [
    {"model": "mlp", "norm": "batch"},
    {"model": "mlp", "norm": "none"},
    {"model": "dln"},
]


@pytest.mark.parametrize("spec", SPECS)
def test_the_recorded_size_equals_the_servers_tally_for_built_in_models(spec, tmp_path):
    s = RunSpec.model_validate({**spec, "dataset": "gaussian_linear", "loss": "sum_squares",
                                "steps": 2, "device": "cpu",
                                "probes": {"activations": {"every": 1}}})
    before = torch.random.get_rng_state()
    size = Trainer(s, tmp_path, "cpu").info["size"]
    assert torch.equal(torch.random.get_rng_state(), before)  # measuring drew nothing
    t = tally(s)
    assert (size["params"], size["norm_out"], size["other_out"]) == (
        t.params, t.norm_out, t.other_out)
    assert size["bn_buffers"] == 2 * t.norm_out  # running mean and var per channel
    # The layer count the dashboard derives from a built-in spec (webapp/runsets.py).
    assert size["n_layers"] == _layers(s.model_dump()) > 0
    view = build_views([{"id": 1, "name": "p", "layers": 7, "total": 2,
                         "spec": {**s.model_dump(), "model": "x.net"}}])[0]
    assert view.n_layers == (7 if s.probes.activations.every else 0)
    # The estimate from the recorded size equals the one from the spec.
    a = AnalysisSpec.model_validate({"kind": "spectrum"})
    plug = s.model_copy(update={"model": "x.net"})
    assert plug.plugin_model
    want, got = estimate_analysis(s, a), estimate_analysis(plug, a, recorded=size)
    assert got.params == want.params and got.hvps == want.hvps
    assert got.eval_samples == want.eval_samples and got.batch_size == want.batch_size


def test_a_plugin_run_without_a_recorded_size_is_unknown():
    s = RunSpec.model_validate({"model": "x.net", "dataset": "gaussian_linear",
                                "loss": "sum_squares", "steps": 2})
    for bad in (None, {}, {"params": 3}, {"params": -1, "in_shape": [2]}):
        with pytest.raises(UnknownCost, match="not recorded"):
            sizes(s, bad)
