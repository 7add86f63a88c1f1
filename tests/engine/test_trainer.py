"""The training loop: probes change nothing, resume is exact, divergence is data, stop works."""

from __future__ import annotations

import math
import struct

import pytest
import torch

from server.spec import NORMS, RunSpec
from tests.engine.small_nets import SMALL
from worker.engine.checkpoint import DirectoryCheckpointStore
from worker.engine.sink import MemorySink
from worker.engine.trainer import Trainer

ALL_PROBES = {
    "landscape": {"every": 2, "multipliers": [0.5, 2.0]},
    "ics": {"every": 3, "layers": [2, 3]},
    "activations": {"every": 2},
    "sharpness": {"every": 4, "iters": 3},
    "grad_norm": {"every": 1},
    "distance": {"every": 1},
}
NO_PROBES = {k: {"every": 0} for k in ALL_PROBES}


def spec(model: str = "mlp", **over) -> RunSpec:
    return RunSpec.model_validate({**SMALL[model], "steps": 8, "seed": 3, "device": "cpu",
                                   "eval_every": 3, "norm_groups": 2, **over})


def state_of(trainer: Trainer) -> dict[str, torch.Tensor]:
    """Parameters AND buffers (BatchNorm running statistics), plus the noise stream."""
    out = {k: v.clone() for k, v in trainer.net.state_dict().items()}
    out["<noise>"] = trainer.noise.get_state()
    return out


def bits(xs) -> list[bytes]:
    """Bit patterns, so that NaN == NaN and -0.0 != 0.0: identity means bitwise."""
    return [struct.pack("<d", x) for x in xs]


def no_timings(series: dict) -> dict:
    """Without the clock's readings (probe_time/*, time/wall_s): they differ run to run."""
    return {k: v for k, v in series.items() if not k.startswith(("probe_time/", "time/"))}


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("model", list(SMALL))
@pytest.mark.parametrize("norm", NORMS)
def test_probes_leave_the_trajectory_bit_identical(tmp_path, model, norm, dtype):
    """All probes on (landscape by the loop, and again vmap-batched) vs all probes off, in
    either precision."""
    batched = {**ALL_PROBES, "landscape": {**ALL_PROBES["landscape"], "batched": True}}
    runs = {}
    for name, probes in (("on", ALL_PROBES), ("on-batched", batched), ("off", NO_PROBES)):
        t = Trainer(spec(model, norm=norm, probes=probes, dtype=dtype), tmp_path)
        assert t.net.state_dict()[next(iter(t.params))].dtype == getattr(torch, dtype)
        sink = MemorySink()
        t.run(sink)
        runs[name] = (t, sink)
    t_off, off = runs["off"]
    assert "landscape/beta" not in off.series
    for name in ("on", "on-batched"):
        t_on, on = runs[name]
        assert bits(on.values("train/loss")) == bits(off.values("train/loss")), name
        assert bits(on.values("test/loss")) == bits(off.values("test/loss")), name  # running stats
        # probed: every even step trained, but not one whose loss ended the run as diverged
        probed = [s for s, v in zip(on.steps("train/loss"), on.values("train/loss"),
                                    strict=True) if s % 2 == 0 and math.isfinite(v)]
        assert sorted(on.series["landscape/beta"]) == probed
        s_on, s_off = state_of(t_on), state_of(t_off)
        assert s_on.keys() == s_off.keys()
        for k in s_on:
            assert torch.equal(s_on[k], s_off[k]) or (  # NaN-aware for diverged runs
                s_on[k].is_floating_point() and torch.equal(s_on[k].isnan(), s_off[k].isnan())
                and torch.equal(s_on[k].nan_to_num(), s_off[k].nan_to_num())), (name, k)
        assert t_on.optimizer.state_dict() == t_off.optimizer.state_dict(), name
    # the batched run measured with vmap at every probed step (no fallback to the loop)
    assert set(runs["on-batched"][1].values("probe_path/landscape_batched")) == {1.0}
    assert "probe_path/landscape_batched" not in runs["on"][1].series


@pytest.mark.parametrize(
    "over",
    [
        {"norm": "noisy_batch"},
        {"norm": "batch", "momentum": 0.9, "weight_decay": 1e-3},
        {"norm": "l2", "optimizer": "adam", "lr": 1e-3},
    ],
    ids=["noisy_batch", "sgd-momentum", "adam"],
)
def test_resume_from_checkpoint_equals_an_uninterrupted_run(tmp_path, over):
    s = spec("mlp", steps=10, checkpoint_every=4, probes=ALL_PROBES, **over)
    whole = MemorySink()
    Trainer(s, tmp_path).run(whole, checkpoints=DirectoryCheckpointStore(tmp_path / "a"))

    store = DirectoryCheckpointStore(tmp_path / "b")
    first = MemorySink()
    paused = Trainer(s, tmp_path).run(first, checkpoints=store, max_steps=6)
    assert paused.status == "paused" and paused.next_step == 6
    assert store.latest_step() == 4  # the "crash" loses steps 4 and 5; they are redone
    second = MemorySink()
    resumed_trainer = Trainer(s, tmp_path)
    done = resumed_trainer.run(second, checkpoints=store)
    assert done.status == "succeeded" and done.next_step == 10

    merged = {k: dict(v) for k, v in no_timings(first.series).items()}
    for k, v in no_timings(second.series).items():
        merged.setdefault(k, {}).update(v)  # what an idempotent sink keeps
    assert merged == no_timings(whole.series)
    assert min(second.steps("train/loss")) == 4
    assert {**first.etas["landscape"], **second.etas["landscape"]} == whole.etas["landscape"]


def stop_at(step: int, request: str):
    """A should_stop that asks for `request` before `step` (it is called once per step)."""
    calls = []

    def should_stop() -> str | None:
        calls.append(1)
        return request if len(calls) > step else None

    return should_stop


@pytest.mark.parametrize("over", [{"norm": "noisy_batch"}, {"norm": "l2", "optimizer": "adam",
                                                              "lr": 1e-3}],
                         ids=["noisy_batch", "adam"])
def test_a_pause_checkpoints_where_it_stops_and_resumes_with_no_step_twice(tmp_path, over):
    s = spec("mlp", steps=10, checkpoint_every=4, probes=ALL_PROBES, **over)
    whole = MemorySink()
    Trainer(s, tmp_path).run(whole)

    store = DirectoryCheckpointStore(tmp_path / "b")
    first = MemorySink()
    paused = Trainer(s, tmp_path).run(first, checkpoints=store, should_stop=stop_at(7, "pause"))
    assert (paused.status, paused.next_step, store.latest_step()) == ("paused", 7, 7)
    assert first.steps("train/loss") == list(range(7))
    second = MemorySink()
    done = Trainer(s, tmp_path).run(second, checkpoints=store)
    assert (done.status, done.first_step, done.next_step) == ("succeeded", 7, 10)
    assert second.steps("train/loss") == [7, 8, 9]  # not one step trained twice

    for key, values in no_timings(whole.series).items():  # the two halves are the whole run
        halves = {**first.series.get(key, {}), **second.series.get(key, {})}
        assert sorted(halves) == sorted(values), key
        assert bits(halves[t] for t in sorted(halves)) == bits(values[t] for t in sorted(values))
    assert {**first.etas["landscape"], **second.etas["landscape"]} == whole.etas["landscape"]


def test_a_pause_on_a_checkpoint_step_or_before_any_step_writes_nothing_more(tmp_path):
    s = spec("mlp", steps=10, checkpoint_every=4)
    store = DirectoryCheckpointStore(tmp_path / "c")
    Trainer(s, tmp_path).run(MemorySink(), checkpoints=store, should_stop=stop_at(0, "pause"))
    assert store.latest_step() == 0 and not store.dir.exists()  # nothing trained, nothing kept
    Trainer(s, tmp_path).run(MemorySink(), checkpoints=store, should_stop=stop_at(4, "pause"))
    assert [p.name for p in store.dir.iterdir()] == ["ckpt-00000004.pt"]  # the periodic one


def test_a_cancel_writes_no_checkpoint(tmp_path):
    store = DirectoryCheckpointStore(tmp_path / "d")
    result = Trainer(spec(checkpoint_every=4), tmp_path).run(
        MemorySink(), checkpoints=store, should_stop=stop_at(6, "cancel"))
    assert (result.status, result.next_step, store.latest_step()) == ("cancelled", 6, 4)


def test_checkpoint_of_another_spec_is_refused(tmp_path):
    store = DirectoryCheckpointStore(tmp_path / "c")
    Trainer(spec(checkpoint_every=2), tmp_path).run(MemorySink(), checkpoints=store, max_steps=2)
    with pytest.raises(ValueError, match="different spec"):
        Trainer(spec(checkpoint_every=2, lr=0.01), tmp_path).run(MemorySink(), checkpoints=store)


def diverging(on_nonfinite: str) -> RunSpec:
    return spec("dln", lr=1.0, steps=30, on_nonfinite=on_nonfinite, eval_every=0,
                probes={"landscape": {"every": 1, "multipliers": [1.0]}})


def test_a_nonfinite_loss_ends_the_run_as_diverged_and_is_recorded(tmp_path):
    sink = MemorySink()
    result = Trainer(diverging("stop"), tmp_path).run(sink)
    losses = sink.values("train/loss")
    assert result.status == "diverged"
    assert result.diverged_at == len(losses) - 1 < 29
    assert not math.isfinite(losses[-1]) and all(math.isfinite(x) for x in losses[:-1])
    assert sink.steps("train/loss")[-1] == result.diverged_at  # the diverged step is recorded


def test_continue_after_nonfinite_records_every_step(tmp_path):
    sink = MemorySink()
    result = Trainer(diverging("continue"), tmp_path).run(sink)
    assert result.status == "diverged" and result.next_step == 30
    assert len(sink.values("train/loss")) == 30
    assert any(math.isnan(x) or math.isinf(x) for x in sink.values("landscape/loss_max"))


def test_should_stop_cancels_before_the_next_step(tmp_path):
    calls = []

    def should_stop() -> bool:
        calls.append(1)
        return len(calls) > 3

    sink = MemorySink()
    result = Trainer(spec(), tmp_path).run(sink, should_stop=should_stop)
    assert result.status == "cancelled" and result.next_step == 3
    assert sink.steps("train/loss") == [0, 1, 2]


def test_test_metrics_at_eval_steps_and_after_the_last_step(tmp_path):
    sink = MemorySink()
    result = Trainer(spec(steps=7, eval_every=3), tmp_path).run(sink)
    assert result.status == "succeeded"
    assert sink.steps("test/acc") == [0, 3, 6, 7]
    assert all(0.0 <= a <= 1.0 for a in sink.values("test/acc"))
    assert len(sink.values("train/acc")) == 7


def test_bf16_needs_cuda(tmp_path):
    with pytest.raises(ValueError, match="CUDA"):
        Trainer(spec(bf16=True), tmp_path)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_run_with_bf16_keeps_data_on_the_device(tmp_path):
    t = Trainer(spec("vgg", device="cuda", bf16=True, probes=ALL_PROBES), tmp_path)
    assert t.data.x_train.is_cuda
    assert t.run(MemorySink()).status == "succeeded"
