"""The quick deep-linear-network reproduction (`landscope reproduce --quick`'s DLN runs),
trained in-process, must show the paper's findings that hold robustly (Fig 10, section 3.3):

- without BatchNorm the peak gradient predictiveness over training is at least 100 times the
  peak with BatchNorm, and so is the peak effective beta-smoothness;
- with BatchNorm, noisy BatchNorm and every lp normalisation the effective beta stays within
  100 times its median over training (no spikes).

The checks are the catalogue's own (server/reproduction/), the ones `landscope reproduce
--report` applies to results in the database. A spec two experiments share is trained once.
"""

from __future__ import annotations

import time

import pytest
import torch

from server import reproduction as R
from server.reproduction.santurkar_checks import flatness
from worker.engine.sink import MemorySink
from worker.engine.trainer import Trainer

KEYS = ("dln-landscape", "dln-lp")


def train_quick(keys: tuple[str, ...], data_dir) -> dict[str, list[R.RunData]]:
    """Each experiment's quick runs, in-process; a spec shared by two is trained once."""
    trained: dict[str, R.RunData] = {}
    out: dict[str, list[R.RunData]] = {}
    for key in keys:
        out[key] = []
        # Seed 0 alone: these tests check the claims on the quick runs; judging them over the
        # plan's three seeds (k of n) is test_reproduce_cli's, on a cheaper experiment.
        for spec in R.EXPERIMENTS[key].plans["quick"].specs(device="cpu", seed=0):
            js = spec.model_dump_json()
            if js not in trained:
                sink = MemorySink()
                result = Trainer(spec, data_dir).run(sink)
                trained[js] = R.run_data_from_memory(spec.model_dump(mode="json"), sink,
                                                     result.status, spec.name_hint())
            out[key].append(trained[js])
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, list[R.RunData]]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # 10x10 layers: a second thread only contends on a shared CPU
    started = time.perf_counter()
    try:
        out = train_quick(KEYS, tmp_path_factory.mktemp("data"))
    finally:
        torch.set_num_threads(threads)
    print(f"\nquick DLN runs trained in {time.perf_counter() - started:.1f} s")
    return out


def test_the_quick_runs_train_every_normalisation_for_the_whole_run(runs):
    norms = {r.spec["norm"] for rs in runs.values() for r in rs}
    assert norms == {"none", "batch", "noisy_batch", "l1", "l2", "linf"}
    for r in (r for rs in runs.values() for r in rs):
        assert r.status == "succeeded", r.name
        steps = r.series["landscape/beta"][0]
        assert steps[0] == 0 and steps[-1] >= r.spec["steps"] - r.spec["probes"]["landscape"][
            "every"], r.name


def test_without_bn_gradient_predictiveness_peaks_at_least_100x_higher(runs):
    out = R.claim("10b").evaluate(runs["dln-landscape"])
    print(out.ours)
    assert out.ok and out.values["ratio"] >= 100


def test_without_bn_effective_beta_peaks_at_least_100x_higher(runs):
    out = R.claim("10c").evaluate(runs["dln-landscape"])
    print(out.ours)
    assert out.ok and out.values["ratio"] >= 100


@pytest.mark.parametrize("claim_id,norms", [("10c-flat", ("batch", "noisy_batch")),
                                            ("5b-lp-smooth", ("batch", "l1", "l2", "linf"))])
def test_with_any_normalisation_beta_stays_within_100x_its_median(runs, claim_id, norms):
    key = R.FIGURE_BY_ID["10" if claim_id == "10c-flat" else "5b"].experiment
    out = R.claim(claim_id).evaluate(runs[key])
    print(out.ours)
    assert out.ok
    for norm in norms:
        assert out.values[f"{norm}/ratio"] <= 100


def test_the_plain_net_is_the_one_that_spikes(runs):
    # The flatness check is not vacuous: the same statistic on the plain net is far above 100.
    out = flatness(("none",))(runs["dln-landscape"])
    assert out.ok is False and out.values["none/ratio"] > 100
