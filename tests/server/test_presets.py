"""Presets: every one is a valid experiment; the quick ones train on offline data."""

from __future__ import annotations

import pytest

from server.presets import PRESETS, get_preset
from worker.engine.sink import MemorySink
from worker.engine.trainer import Trainer


@pytest.mark.parametrize("name", list(PRESETS))
def test_every_preset_expands_to_valid_runs_sharing_seed_and_data(name):
    specs = PRESETS[name].specs()
    assert len(specs) >= 2  # a preset is a comparison
    assert len({(s.seed, s.dataset, s.batch_size) for s in specs}) == 1


def test_paper_presets_follow_the_protocol():
    vgg = get_preset("paper-vgg16").specs()[0]
    assert (vgg.vgg_config, vgg.width, vgg.lr, vgg.batch_size, vgg.steps) == (16, 1.0, 0.1, 128,
                                                                             15000)
    assert vgg.probes.landscape.multipliers == [0.5, 1.0, 2.0, 4.0]
    assert vgg.probes.ics.layers == [5, 10]
    dln = get_preset("paper-dln").specs()[0]
    assert (dln.depth, dln.width, dln.lr, dln.batch_size, dln.steps) == (25, 10, 1e-6, None, 10000)
    assert dln.probes.landscape.multipliers == [0.01, 0.1, 1.0, 10.0, 30.0]
    ics = get_preset("paper-dln-ics").specs()
    assert {(s.norm, s.lr) for s in ics} == {(n, lr) for n in ("none", "batch")
                                             for lr in (1e-6, 1e-7)}


@pytest.mark.parametrize("name", [n for n in PRESETS if n.startswith("quick-")])
def test_quick_presets_run_offline(tmp_path, name):
    for spec in PRESETS[name].specs():
        spec = spec.model_copy(update={"steps": 3, "device": "cpu"})
        assert Trainer(spec, tmp_path).run(MemorySink()).status == "succeeded"
