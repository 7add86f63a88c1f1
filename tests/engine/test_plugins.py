"""Plug-in models and datasets (worker/engine/plugins.py), with a distribution really installed
by pip into a directory of its own (tests/support/plugin_package.py) and put on sys.path.

Checked: what is listed (and what is ignored, and why); a plug-in run trains with every probe
on the traced layout; building is seeded and leaves the global RNG alone; probes leave the
trajectory unchanged; broken plug-ins fail with a message that names them; and a name that is
a module path imports nothing, in a fresh interpreter where that module is importable.
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from server.spec import build_spec
from tests.support import plugin_package
from worker.engine import plugins
from worker.engine.models import build_model
from worker.engine.sink import MemorySink
from worker.engine.trainer import Trainer

ROOT = Path(__file__).resolve().parents[2]
LABEL = f"{plugin_package.DIST} {plugin_package.VERSION}"

SPEC = {
    "model": "testplug.tiny_net", "model_options": {"hidden": 12},
    "dataset": "testplug.blobs", "dataset_options": {"n": 128, "dim": 5},
    "steps": 24, "batch_size": 32, "eval_every": 8, "lr": 0.05,
}
ALL_PROBES = {
    "landscape": {"every": 8}, "ics": {"every": 8, "layers": [1, 2, 3]},
    "activations": {"every": 8}, "sharpness": {"every": 12, "iters": 3},
    "grad_norm": {"every": 1}, "distance": {"every": 1},
}
NO_PROBES = {k: {"every": 0} for k in ALL_PROBES}


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    path = plugin_package.install(tmp_path_factory.mktemp("plugin"))
    sys.path.insert(0, str(path))
    importlib.invalidate_caches()
    yield path
    sys.path.remove(str(path))
    for name in [m for m in sys.modules if m.startswith(plugin_package.MODULE)]:
        del sys.modules[name]


def spec(**changes):
    return build_spec({**SPEC, **changes})


def test_installed_lists_usable_names_with_their_distribution(site):
    got = plugins.installed()
    assert got["models"] == {"testplug.broken": LABEL, "testplug.tiny_net": LABEL}
    assert got["datasets"] == {"testplug.blobs": LABEL}
    # An entry point named like a built-in is never used in its place: ignored, and said so.
    assert got["problems"] == [f"model 'mlp' from {LABEL}: shadows a built-in: ignored"]


def test_the_layout_is_traced_from_the_plugin_module(site):
    net = build_model(spec(), (5,), 3, torch.Generator())
    inner = net.model
    assert net.weight_layers == [inner[1], inner[4], inner[7]]  # inner[6] is the Dropout
    # Slot 1 is the BatchNorm; weight layer 2 has none, so its own output is the activation.
    assert net.norm_slots == [inner[2], inner[4]]
    assert net.layer_widths() == [12, 12]
    assert net.param_layer_index() == {
        "model.1.weight": 1, "model.1.bias": 1, "model.2.weight": 1, "model.2.bias": 1,
        "model.4.weight": 2, "model.4.bias": 2, "model.7.weight": 3, "model.7.bias": 3,
    }
    assert net.info["plugin"] == {"name": "testplug.tiny_net", "distribution":
                                  plugin_package.DIST, "version": plugin_package.VERSION,
                                  "entry_point": "landscope_testplug.nets:tiny_net"}


def test_building_is_seeded_and_leaves_the_global_rng_alone(site):
    torch.manual_seed(999)
    before = torch.get_rng_state()
    a = build_model(spec(), (5,), 3, torch.Generator())
    assert torch.equal(torch.get_rng_state(), before)
    b = build_model(spec(), (5,), 3, torch.Generator())
    c = build_model(spec(seed=1), (5,), 3, torch.Generator())
    for (name, pa), (_, pb) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert torch.equal(pa, pb), name
    assert not torch.equal(a.state_dict()["model.1.weight"], c.state_dict()["model.1.weight"])


def test_a_plugin_run_trains_with_every_probe(site):
    sink = MemorySink()
    result = Trainer(spec(probes=ALL_PROBES), ROOT, "cpu").run(sink)
    assert result.status == "succeeded"
    keys = set(sink.series)
    for key in ("train/loss", "test/acc", "grad/norm", "dist/init", "landscape/beta",
                "ics/L1/cos", "ics/L3/l2", "act/L1/mean", "act/L2/var", "sharpness/top_eig"):
        assert key in keys, key
    assert sorted(sink.series["ics/L3/l2"]) == [0, 8, 16]
    assert sink.series["train/loss"][23] < sink.series["train/loss"][0]
    assert result.info["model"]["plugin"]["name"] == "testplug.tiny_net"
    assert result.info["data"]["plugin"]["name"] == "testplug.blobs"


def test_probes_change_nothing_of_a_plugin_trajectory(site):
    with_probes, without = MemorySink(), MemorySink()
    a = Trainer(spec(probes=ALL_PROBES), ROOT, "cpu")
    a.run(with_probes)
    b = Trainer(spec(probes=NO_PROBES), ROOT, "cpu")
    b.run(without)
    assert with_probes.series["train/loss"] == without.series["train/loss"]
    for (name, pa), (_, pb) in zip(a.net.state_dict().items(), b.net.state_dict().items(),
                                   strict=True):
        assert torch.equal(pa, pb), name


def test_broken_or_missing_plugins_fail_with_a_message_naming_them(site):
    with pytest.raises(plugins.PluginError, match=f"testplug.broken.*{LABEL}.*on purpose"):
        build_model(spec(model="testplug.broken"), (5,), 3, torch.Generator())
    absent = "unknown model 'lab.absent': no plug-in.*installed: testplug.broken, testplug.tiny"
    with pytest.raises(plugins.PluginError, match=absent):
        plugins.find("models", "lab.absent")
    with pytest.raises(plugins.PluginError, match="shadows a built-in"):
        plugins.find("models", "mlp")
    with pytest.raises(plugins.PluginError, match=r"probes.ics.layers \[4\] exceed the 3"):
        build_model(spec(probes={"ics": {"every": 1, "layers": [4]}}), (5,), 3,
                    torch.Generator())


def test_a_factory_must_return_what_the_engine_takes(site, monkeypatch):
    monkeypatch.setattr("landscope_testplug.nets.tiny_net", lambda *a: "not a module")
    with pytest.raises(plugins.PluginError, match="returned str, not a torch.nn.Module"):
        build_model(spec(), (5,), 3, torch.Generator())
    monkeypatch.setattr("landscope_testplug.nets.tiny_net", lambda *a: nn.ReLU())
    with pytest.raises(plugins.PluginError, match="ran no Conv or Linear"):
        build_model(spec(), (5,), 3, torch.Generator())


PROBE_IMPORTS = """
import json, sys
from server.spec import build_spec
from worker.engine import plugins
from worker.engine.models import build_model
out = {}
for name in sys.argv[1:]:
    try:
        plugins.load("models", name)
        out[name] = "loaded"
    except plugins.PluginError as exc:
        out[name] = str(exc)
    try:
        build_model(build_spec({"model": name}), (5,), 3, None)
        out[name + " (build)"] = "built"
    except plugins.PluginError as exc:
        out[name + " (build)"] = "refused"
out["imported"] = sorted(m for m in sys.modules if m.startswith("landscope_testplug"))
print(json.dumps(out))
"""


def test_a_module_path_as_a_name_imports_nothing(site):
    """In a fresh interpreter where the plug-in's module IS importable, names that are module
    paths (or anything else not an installed entry point's name) load nothing."""
    names = ["landscope_testplug.nets", "landscope_testplug.nets.tiny_net", "os.system",
             "landscope_testplug"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(ROOT)])}
    proc = subprocess.run([sys.executable, "-c", PROBE_IMPORTS, *names], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120, check=True)
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["imported"] == []
    for name in names:
        assert out[name].startswith(f"unknown model {name!r}: no plug-in"), out[name]
        assert out[name + " (build)"] == "refused"


def test_one_name_from_two_distributions_is_used_by_neither(site, tmp_path, monkeypatch):
    """A second distribution (a bare dist-info directory, which importlib.metadata reads like
    any installed one) also declares testplug.tiny_net: the name is ambiguous, so it is neither
    listed nor loaded, and the problem says who provides it."""
    info = tmp_path / "other_nets-2.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: other-nets\nVersion: 2.0\n")
    (info / "entry_points.txt").write_text(
        "[landscope.models]\ntestplug.tiny_net = other_nets:tiny_net\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    got = plugins.installed()
    assert got["models"] == {"testplug.broken": LABEL}
    assert any("'testplug.tiny_net' is provided by several distributions" in p
               and "other-nets 2.0" in p and LABEL in p for p in got["problems"])
    with pytest.raises(plugins.PluginError, match="several distributions.*uninstall all but"):
        build_model(spec(), (5,), 3, torch.Generator())
