"""POST /experiments/cost, the dry run of POST /experiments: training, the default analyses
and the snapshots' disk, per run and in total, against a hand computation; and the snapshot
estimate against the files a real run writes."""

from __future__ import annotations

import math

import pytest

from server.cost import (
    SNAPSHOT_FILE_OVERHEAD,
    SNAPSHOT_TENSOR_OVERHEAD,
    snapshot_file_bytes,
    snapshot_steps,
)
from server.experiment_cost import ASSUMED_FLOPS, PASS_SECONDS
from server.presets import PRESETS
from server.spec import build_spec

OFF = {k: {"every": 0} for k in ("landscape", "ics", "activations", "sharpness")}
BASE = {"model": "mlp", "depth": 3, "width": 16, "dataset": "digits", "steps": 30,
        "batch_size": 32, "device": "cpu", "eval_every": 0, "probes": OFF,
        "snapshots": {"every": 10}}
SURFACE = {"kind": "surface", "steps": [10, 30], "x": {"points": 3}, "y": {"points": 3},
           "eval_samples": 128}
SPECTRUM = {"kind": "spectrum", "eval_samples": 128,
            "spectrum": {"top_k": 2, "lanczos_steps": 6, "trace_probes": 4, "slq_steps": 6,
                         "slq_vectors": 2, "density_points": 32}}
BODY = {"base": BASE, "vary": {"norm": ["none", "batch"]}, "analyses": [SURFACE, SPECTRUM]}


def test_the_dry_run_equals_a_hand_computation_and_saves_nothing(client):
    r = client.post("/api/v1/experiments/cost", json=BODY)
    assert r.status_code == 200, r.text
    got = r.json()
    assert client.get("/api/v1/experiments").json()["total"] == 0  # nothing saved
    none, bn = got["runs"]
    # digits: 8x8 inputs, 10 classes. MLP 64-16-16-10 with biases: 1,482 parameters and
    # 64*16 + 16*16 + 16*10 = 1,440 multiply-adds a sample; BN adds gamma, beta (64 more)
    # and running mean and variance (64) plus a counter per slot (2), 5 tensors a slot.
    macs, rate, per_pass = 1440, ASSUMED_FLOPS["cpu"], PASS_SECONDS["cpu"]
    for run in (none, bn):
        t = run["training"]
        assert (t["steps"], t["cost_steps"], t["forward_equivalents"]) == (30, 30.0, 90.0)
        assert t["seconds"] == pytest.approx(2 * macs * 32 * 90 / rate + 30 * per_pass)
        surface, spectrum = run["analyses"]
        assert (surface["kind"], surface["steps"]) == ("surface", [10, 30])
        # 3 x 3 points at 2 steps, forward only, over 128 samples in 4 batches of 32
        assert (surface["forward_passes"], surface["backward_passes"], surface["hvps"],
                surface["forward_equivalents"]) == (18.0, 0.0, 0, 18.0)
        assert surface["seconds"] == pytest.approx(2 * macs * 128 * 18 / rate
                                                   + 18 * 4 * per_pass)
        # Lanczos ceil(1.2 x 6) = 8, Hutchinson 4, SLQ 6 x 2: 24 HVPs; one gradient; an HVP
        # is two backward passes and a backward pass three forward passes
        assert spectrum["steps"] == [30]  # the default: the last step
        assert (spectrum["forward_passes"], spectrum["backward_passes"], spectrum["hvps"],
                spectrum["forward_equivalents"]) == (0.0, 1.0, 24, 147.0)
        assert spectrum["seconds"] == pytest.approx(2 * macs * 128 * 147 / rate
                                                    + 147 * 4 * per_pass)
        assert run["seconds"] == pytest.approx(t["seconds"] + surface["seconds"]
                                               + spectrum["seconds"])
        assert run["snapshots"]["count"] == 4  # steps 0, 10, 20, 30
    spec_json = {n: len(build_spec({**BASE, "norm": n}).model_dump_json())
                 for n in ("none", "batch")}
    file_none = 4 * 1482 + spec_json["none"] + SNAPSHOT_FILE_OVERHEAD + 6 * SNAPSHOT_TENSOR_OVERHEAD
    file_bn = (4 * (1546 + 64) + 8 * 2 + spec_json["batch"] + SNAPSHOT_FILE_OVERHEAD
               + 16 * SNAPSHOT_TENSOR_OVERHEAD)
    assert none["snapshots"] == {"count": 4, "bytes_per_file": file_none, "bytes": 4 * file_none}
    assert bn["snapshots"] == {"count": 4, "bytes_per_file": file_bn, "bytes": 4 * file_bn}
    total = got["total"]
    assert (total["runs"], total["analyses"], total["snapshots"]) == (2, 4, 8)
    assert total["training_cost_steps"] == 60.0
    assert (total["analysis_forward_passes"], total["analysis_backward_passes"],
            total["analysis_hvps"]) == (36.0, 2.0, 48)
    assert total["snapshot_bytes"] == 4 * (file_none + file_bn)
    assert total["seconds"] == pytest.approx(none["seconds"] + bn["seconds"])
    assert total["seconds"] == pytest.approx(total["training_seconds"]
                                             + total["analysis_seconds"])


def test_a_preset_dry_run_costs_its_default_analyses_and_none_when_asked(client):
    got = client.post("/api/v1/experiments/cost", json={"preset": "quick-mlp"}).json()
    n_default = len(PRESETS["quick-mlp"].analyses)
    assert n_default and all(len(r["analyses"]) == n_default for r in got["runs"])
    assert got["total"]["analysis_seconds"] > 0
    bare = client.post("/api/v1/experiments/cost",
                       json={"preset": "quick-mlp", "analyses": []}).json()
    assert bare["total"]["analyses"] == 0 and bare["total"]["analysis_seconds"] == 0
    assert bare["total"]["training_seconds"] == got["total"]["training_seconds"]


def test_the_dry_run_refuses_what_a_launch_refuses_at_the_same_field(client):
    bad = {**BODY, "base": {**BASE, "steps": -1}}
    for path in ("/api/v1/experiments/cost", "/api/v1/experiments"):
        r = client.post(path, json=bad)
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "base",
                                                                         "steps"], r.text
    off = {**BODY, "analyses": [{**SURFACE, "steps": [15]}]}  # not a snapshot step
    r = client.post("/api/v1/experiments/cost", json=off)
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "analyses", 0,
                                                                     "steps"]


@pytest.mark.parametrize("over", [
    {"norm": "batch"},
    {"norm": "none", "snapshots": {"every": 5}},
    {"model": "vgg", "vgg_config": 11, "width": 0.125, "norm": "batch", "batch_size": 16},
    {"model": "resnet", "resnet_depth": 20, "norm": "group", "norm_groups": 4, "steps": 2,
     "snapshots": {"every": 0}},
], ids=["mlp-bn", "mlp", "vgg-bn", "resnet-gn"])
def test_the_snapshot_estimate_is_within_2_percent_of_the_files_a_run_writes(tmp_path, over):
    """Tolerance: 2 % of the files' total, or 1.5 KiB a file for the smallest nets (the
    overhead fit in server/cost.py is within 1.3 KB of every file it was fitted on)."""
    from worker.engine.sink import MemorySink
    from worker.engine.snapshots import DirectorySnapshotStore
    from worker.engine.trainer import Trainer

    spec = build_spec({**BASE, **over})
    store = DirectorySnapshotStore(tmp_path / "snaps")
    Trainer(spec, tmp_path).run(MemorySink(), snapshots=store)
    files = sorted((tmp_path / "snaps").iterdir())
    assert len(files) == snapshot_steps(spec)
    real = sum(f.stat().st_size for f in files)
    estimated = len(files) * snapshot_file_bytes(spec)
    assert abs(estimated - real) <= max(0.02 * real, 1536 * len(files)), (estimated, real)
    assert math.isclose(estimated, real, rel_tol=0.15)
