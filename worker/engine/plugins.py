"""Plug-in models and datasets: found by name among the installed entry points, and nowhere else.

A distribution provides them in its pyproject.toml:

    [project.entry-points."landscope.models"]
    "mylab.wide_net" = "mylab.nets:wide_net"
    [project.entry-points."landscope.datasets"]
    "mylab.spirals" = "mylab.data:spirals"

and a run spec names them: {"model": "mylab.wide_net", "model_options": {...}}. The name in a
spec is only ever compared with the names of installed entry points
(importlib.metadata.entry_points(group=..., name=...)); the object loaded is the one the
installed distribution declares. Nothing a spec says is ever imported as a module path, so a
spec naming "os.system" finds no plug-in and imports nothing.

Factories (the engine calls them with keyword-free positional arguments):

- models: `factory(spec, in_shape, n_outputs) -> torch.nn.Module`, built on the CPU. `spec` is
  the whole RunSpec (read `spec.model_options`; `spec.norm`, `spec.width` ... as the plug-in
  sees fit). It is called with the global torch RNG seeded from `spec.seed` and restored
  afterwards, so default initialisations are reproducible and disturb nothing. Inputs are
  float tensors of shape (batch, *in_shape); outputs (batch, n_outputs).
- datasets: `factory(spec, data_dir) -> worker.engine.data.Dataset` (read
  `spec.dataset_options`; `data_dir` is the worker's data directory, for files it keeps).

The engine wraps a plug-in model in `PluginNet`, which finds the weight layers and norm slots
the probes need by tracing one forward pass (worker/engine/introspect.py).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from importlib import metadata
from typing import Any, Literal

import torch
from torch import nn

from server.spec import PLUGIN_NAME, RunSpec, builtin_datasets, builtin_models

log = logging.getLogger(__name__)

Kind = Literal["models", "datasets"]
GROUPS: dict[Kind, str] = {"models": "landscope.models", "datasets": "landscope.datasets"}


class PluginError(ValueError):
    """A plug-in that cannot be had or that broke its contract; the message says which and
    is shown to the user as the run's error."""


@dataclass(frozen=True)
class Plugin:
    kind: Kind
    name: str
    value: str  # "module:attr", as the distribution declares it (for messages only)
    dist: str
    version: str

    @property
    def label(self) -> str:
        return f"{self.dist} {self.version}"


def _builtins(kind: Kind) -> tuple[str, ...]:
    return builtin_models() if kind == "models" else builtin_datasets()


def _plugin(kind: Kind, ep: metadata.EntryPoint) -> Plugin:
    dist = ep.dist
    name = (dist.metadata["Name"] if dist is not None else None) or "unknown distribution"
    version = (dist.version if dist is not None else None) or "unknown version"
    return Plugin(kind, ep.name, ep.value, name, version)


def _problem(kind: Kind, name: str) -> str | None:
    if name in _builtins(kind):
        return "shadows a built-in: ignored"
    if len(name) > 100 or re.fullmatch(PLUGIN_NAME, name) is None:
        return f"not a valid plug-in name (pattern {PLUGIN_NAME}): ignored"
    return None


def _scan(kind: Kind) -> tuple[dict[str, list[Plugin]], list[str]]:
    """name -> every installed entry point of that name (more than one: ambiguous), and
    the problems found. Entry points are only listed here, never loaded."""
    found: dict[str, list[Plugin]] = {}
    problems: list[str] = []
    for ep in metadata.entry_points(group=GROUPS[kind]):
        p = _plugin(kind, ep)
        if (why := _problem(kind, ep.name)) is not None:
            problems.append(f"{kind[:-1]} {ep.name!r} from {p.label}: {why}")
            continue
        found.setdefault(ep.name, []).append(p)
    for name, ps in found.items():
        if len({(p.dist, p.value) for p in ps}) > 1:
            problems.append(f"{kind[:-1]} {name!r} is provided by several distributions "
                            f"({'; '.join(p.label for p in ps)}): ambiguous, not usable")
    return found, problems


def installed() -> dict[str, Any]:
    """What this process can load, for a worker's heartbeat info: {"models": {name: "dist
    version"}, "datasets": {...}, "problems": [...]} (ambiguous names are left out)."""
    out: dict[str, Any] = {"problems": []}
    for kind in GROUPS:
        found, problems = _scan(kind)
        out[kind] = {name: ps[0].label for name, ps in sorted(found.items())
                     if len({(p.dist, p.value) for p in ps}) == 1}
        out["problems"] += problems
    return out


def find(kind: Kind, name: str) -> Plugin:
    """The installed plug-in of that name, or PluginError saying what is installed."""
    if (why := _problem(kind, name)) is not None:
        raise PluginError(f"{kind[:-1]} {name!r} {why.split(':')[0]}")
    eps = metadata.entry_points(group=GROUPS[kind], name=name)
    plugins = [_plugin(kind, ep) for ep in eps]
    if len({(p.dist, p.value) for p in plugins}) > 1:
        raise PluginError(f"{kind[:-1]} {name!r} is provided by several distributions "
                          f"({'; '.join(p.label for p in plugins)}); uninstall all but one")
    if not plugins:
        have = ", ".join(installed()[kind]) or "none"
        raise PluginError(f"unknown {kind[:-1]} {name!r}: no plug-in of that name is installed "
                          f"on this worker (entry-point group {GROUPS[kind]}; installed: {have})")
    return plugins[0]


def load(kind: Kind, name: str) -> tuple[Plugin, Any]:
    """(the plug-in, its factory): the entry point's own object, loaded."""
    plugin = find(kind, name)
    (ep,) = {ep for ep in metadata.entry_points(group=GROUPS[kind], name=name)
             if ep.value == plugin.value}
    try:
        factory = ep.load()
    except Exception as exc:  # the plug-in's own import failed: say whose
        raise PluginError(f"plug-in {kind[:-1]} {name!r} ({plugin.label}, {plugin.value}) "
                          f"failed to load: {type(exc).__name__}: {exc}") from exc
    if not callable(factory):
        raise PluginError(f"plug-in {kind[:-1]} {name!r} ({plugin.value}) is not callable")
    return plugin, factory


def provenance(plugin: Plugin) -> dict[str, str]:
    """What a run records of the plug-in it used (with its results, so figures can say)."""
    return {"name": plugin.name, "distribution": plugin.dist, "version": plugin.version,
            "entry_point": plugin.value}


# ------------------------------------------------------------------------------------------
# Models


class PluginNet(nn.Module):
    """A plug-in's module as the engine and its probes see a model (worker/engine/models.Net):
    weight layers and norm slots in forward order, found by tracing one forward pass.

    `norm_slots[i]` is the module whose output is layer i+1's normalised activation: the norm
    after weight layer i+1, or where the plug-in has none there, that weight layer itself (what
    the engine's identity slot would output), so activation hooks always fire.
    """

    def __init__(self, module: nn.Module, in_shape: tuple[int, ...],
                 noise_generator: torch.Generator, info: dict[str, Any]) -> None:
        super().__init__()
        from worker.engine.introspect import describe as trace

        self.model = module
        self.noise_generator = noise_generator  # the probes save/restore it; unused here
        example = torch.zeros((2, *in_shape))  # two rows: batch norm needs more than one
        try:
            self.layout = trace(self, example)
        except Exception as exc:
            raise PluginError(f"plug-in model: a forward pass on inputs of shape "
                              f"{tuple(example.shape)} failed: {type(exc).__name__}: {exc}"
                              ) from exc
        points, _ = self.layout.activation_points("norm_output")
        self._points = points
        self.info = {**info, "weight_layers": self.layout.weight_names,
                     "norm_present": list(self.layout.slot_present),
                     "widths": self.layout.widths}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    @property
    def weight_layers(self) -> list[nn.Module]:
        return list(self.layout.weight_layers)

    @property
    def norm_slots(self) -> list[nn.Module]:
        return list(self._points)

    def layer_widths(self) -> list[int]:
        """Units or channels of each slot's activation, input side first."""
        return list(self.layout.widths)

    def param_layer_index(self) -> dict[str, int]:
        return self.layout.param_layer_index()


def build_plugin_model(spec: RunSpec, in_shape: tuple[int, ...], n_outputs: int,
                       noise_generator: torch.Generator) -> PluginNet:
    plugin, factory = load("models", spec.model)
    # The factory's default inits draw from the global RNG: seed it from the spec, and put it
    # back afterwards so that building a model disturbs nothing seeded elsewhere.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(spec.seed)
        try:
            module = factory(spec, tuple(in_shape), n_outputs)
        except Exception as exc:
            raise PluginError(f"plug-in model {spec.model!r} ({plugin.label}) failed to build: "
                              f"{type(exc).__name__}: {exc}") from exc
    if not isinstance(module, nn.Module):
        raise PluginError(f"plug-in model {spec.model!r} returned {type(module).__name__}, "
                          "not a torch.nn.Module")
    net = PluginNet(module, tuple(in_shape), noise_generator, {"plugin": provenance(plugin)})
    n = len(net.weight_layers)
    bad = [i for i in spec.probes.ics.layers if i > n]
    if spec.probes.ics.every and bad:
        raise PluginError(f"probes.ics.layers {bad} exceed the {n} weight layers of plug-in "
                          f"model {spec.model!r}")
    return net


# ------------------------------------------------------------------------------------------
# Datasets


def load_plugin_dataset(spec: RunSpec, data_dir):
    from worker.engine.data import Dataset

    plugin, factory = load("datasets", spec.dataset)
    try:
        data = factory(spec, data_dir)
    except Exception as exc:
        raise PluginError(f"plug-in dataset {spec.dataset!r} ({plugin.label}) failed to load: "
                          f"{type(exc).__name__}: {exc}") from exc
    if not isinstance(data, Dataset):
        raise PluginError(f"plug-in dataset {spec.dataset!r} returned {type(data).__name__}, "
                          "not a worker.engine.data.Dataset")
    if data.task == "regression" and spec.loss == "cross_entropy":
        raise PluginError(f"plug-in dataset {spec.dataset!r} is regression: use loss "
                          "'sum_squares'")
    data.info = {**data.info, "plugin": provenance(plugin)}
    return data
