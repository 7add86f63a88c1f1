"""The ResNet presets: Li et al. 2018's skip x BatchNorm comparison, at paper scale and on CPU.
(Every preset is also checked by test_presets.py, test_limits.py and the analyses' tests.)"""

from __future__ import annotations

from server.cost import estimate
from server.presets import DEFAULT_ANALYSES, PRESETS, QUICK_ANALYSES


def test_both_compare_skip_and_batchnorm_on_one_seed_and_data_order():
    for name in ("paper-resnet56-skip", "quick-resnet"):
        specs = PRESETS[name].specs()
        assert {(s.skip, s.norm) for s in specs} == {
            (skip, norm) for skip in (True, False) for norm in ("none", "batch")}
        assert len({(s.seed, s.dataset, s.batch_size, s.resnet_depth, s.lr) for s in specs}) == 1
        # Option A shortcuts: the skip and noshort nets have the same parameters.
        by = {(s.skip, s.norm): estimate(s).params for s in specs}
        assert by[True, "batch"] == by[False, "batch"]
        assert by[True, "none"] == by[False, "none"]


def test_the_paper_preset_is_li_et_als_resnet56_protocol():
    p = PRESETS["paper-resnet56-skip"]
    s = p.specs()[0]
    assert (s.model, s.resnet_depth, s.dataset) == ("resnet", 56, "cifar10")
    assert (s.optimizer, s.lr, s.momentum, s.weight_decay, s.batch_size) == (
        "sgd", 0.1, 0.9, 5e-4, 128)
    assert s.steps == 64_000
    assert p.analyses == DEFAULT_ANALYSES  # surface and spectrum of every final network
    assert estimate(s.model_copy(update={"norm": "batch"})).params == 853_018


def test_the_quick_preset_is_resnet20_on_digits_with_the_quick_analyses():
    p = PRESETS["quick-resnet"]
    s = p.specs()[0]
    assert (s.resnet_depth, s.dataset, s.steps, s.device) == (20, "digits", 300, "auto")
    assert s.probes.ics.layers == [5, 15] and s.probes.landscape.every == 20
    assert p.analyses == QUICK_ANALYSES
    assert p.analyses[0]["kind"] == "surface"


def test_the_api_launches_the_preset_and_names_a_bad_resnet_field(sqlite_client):
    r = sqlite_client.post("/api/v1/experiments", json={"preset": "quick-resnet"})
    assert r.status_code == 201, r.text
    runs = r.json()["runs"]
    assert len(runs) == 4
    assert {(x["spec"]["skip"], x["spec"]["norm"]) for x in runs} == {
        (True, "none"), (True, "batch"), (False, "none"), (False, "batch")}
    for body, loc, needle in [
        ({"preset": "quick-resnet", "base": {"resnet_depth": 44}},
         ["body", "base", "resnet_depth"], "20"),
        ({"preset": "quick-resnet", "vary": {"skip": ["maybe"]}},
         ["body", "vary", "skip"], "true or false"),
        ({"preset": "quick-resnet", "base": {"dataset": "mnist1d"}},
         ["body", "base"], "needs image data"),  # a rule across fields, as vgg's
        ({"preset": "quick-vgg", "base": {"skip": False}}, ["body", "base", "skip"],
         "model 'resnet' only"),
    ]:
        r = sqlite_client.post("/api/v1/experiments", json=body)
        assert r.status_code == 422, (body, r.text)
        [err] = r.json()["detail"]
        assert needle in err["msg"], (body, err)
        assert err["loc"] == loc, (body, err)
