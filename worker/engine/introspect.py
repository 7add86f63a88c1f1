"""The places the probes need, found in ANY nn.Module (a user's network, a plug-in, a ResNet).

The engine's own `Net` (worker/engine/models.py) records its weight layers and norm slots as it
builds them. A network the engine did not build is described here instead, from one traced
forward pass: forward pre-hooks on every module record the order in which modules actually run,
which is the order the probes mean ("weight layer 1 is nearest the input"). Module registration
order is not that order (a ResNet registers its shortcut after the block it skips, a user may
define layers in any order), so it is never used.

- weight layers: every Conv (1d/2d/3d, transposed too) and Linear that runs, in the order of its
  first call (a layer called twice, weights shared, counts once);
- norm slots: after every weight layer but the last, the first normalisation module (BatchNorm,
  GroupNorm, LayerNorm, InstanceNorm, the engine's LpNorm) that runs after it and before the
  next weight layer (a container of norms only, such as the engine's noisy BatchNorm, counts
  as one); where there is none, an `nn.Identity` placeholder that is NOT part of the
  model (`slot_present[i]` says which), as the engine's Net has for norm "none";
- param_layer_index: every parameter -> the 1-based weight layer it belongs to or follows, as
  `Net.param_layer_index` (0: used before weight layer 1; it comes before every layer).

The traced forward changes nothing: it runs under no_grad, and the model's buffers (BatchNorm
running statistics) and every random generator (torch's global CPU and CUDA ones: dropout; any
a module holds: the engine's noisy norms) are put back
exactly as they were.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten

from worker.engine.norms import LpNorm, NoiseInjection

WEIGHT_TYPES: tuple[type[nn.Module], ...] = (nn.Linear, nn.modules.conv._ConvNd)
NORM_TYPES: tuple[type[nn.Module], ...] = (
    nn.modules.batchnorm._BatchNorm,
    nn.GroupNorm,
    nn.LayerNorm,
    nn.modules.instancenorm._InstanceNorm,
    LpNorm,
    NoiseInjection,  # the engine's noisy norms: Sequential(BatchNorm, NoiseInjection) or alone
) + ((nn.RMSNorm,) if hasattr(nn, "RMSNorm") else ())


def _is_weight(m: nn.Module) -> bool:
    return isinstance(m, WEIGHT_TYPES) and isinstance(getattr(m, "weight", None), Tensor)


def is_norm(m: nn.Module) -> bool:
    """A normalisation, or a container made only of them (the engine's noisy BatchNorm): its
    output, after any noise, is the slot's output."""
    if isinstance(m, NORM_TYPES):
        return True
    children = list(m.children())
    return bool(children) and all(is_norm(c) for c in children)


@dataclass
class ModelLayout:
    """Named positions of a model, in forward order (see the module docstring)."""

    model: nn.Module
    weight_layers: list[nn.Module]
    weight_names: list[str]  # qualified module names, as in model.named_modules()
    norm_slots: list[nn.Module]  # one per weight layer but the last; placeholders included
    slot_present: list[bool]  # False: norm_slots[i] is a placeholder outside the model
    widths: list[int]  # channels/features of each slot's activation (dim 1 of its output)
    layer_of: dict[str, int] = field(default_factory=dict)  # parameter name -> layer index

    def param_layer_index(self) -> dict[str, int]:
        return dict(self.layer_of)

    def weight_param_names(self) -> list[str]:
        """The parameter name of each weight layer's weight (the ICS probe's G)."""
        names = {id(p): n for n, p in self.model.named_parameters()}
        return [names[id(layer.weight)] for layer in self.weight_layers]

    def activation_points(self, point: str = "norm_output") -> tuple[list[nn.Module], str]:
        """(modules, hook kind) for worker.engine.probes.activations.ActivationsProbe.

        norm_output: each slot's output; where the slot is a placeholder (no norm), the weight
        layer's own output, which is what an identity slot would output. layer_input: what
        weight layers 2.. receive, as for the engine's Net.
        """
        if point == "norm_output":
            points = [
                slot if present else layer
                for slot, present, layer in zip(
                    self.norm_slots, self.slot_present, self.weight_layers, strict=False
                )
            ]
            return points, "output"
        if point == "layer_input":
            return self.weight_layers[1:], "input"
        raise ValueError(f"unknown activation point {point!r}")


def describe(model: nn.Module, example_input: Tensor | Sequence[Tensor]) -> ModelLayout:
    """The layout of `model`, from one forward pass on `example_input` (a batch, or a tuple of
    positional arguments). Raises ValueError when the forward runs no weight layer."""
    args = tuple(example_input) if isinstance(example_input, (tuple, list)) else (example_input,)
    module_name = {id(m): n for n, m in model.named_modules()}
    events: list[tuple[str, nn.Module]] = []  # ("pre" | "post", module), in call order
    outputs: dict[int, Tensor] = {}  # id(module) -> its first output, for the slot widths
    first_use = _FirstUse({id(p): n for n, p in model.named_parameters()})

    def pre(module: nn.Module, _args: tuple) -> None:
        events.append(("pre", module))
        first_use.begin(module)

    def post(module: nn.Module, _args: tuple, out: object) -> None:
        events.append(("post", module))
        if isinstance(out, Tensor) and id(module) not in outputs:
            outputs[id(module)] = out

    handles = []
    for m in model.modules():
        handles.append(m.register_forward_pre_hook(pre))
        handles.append(m.register_forward_hook(post))
    try:
        with _untouched(model), torch.no_grad(), first_use:
            model(*args)
    finally:
        for h in handles:
            h.remove()
    return _layout(model, events, outputs, module_name, first_use.at)


def _layout(
    model: nn.Module,
    events: list[tuple[str, nn.Module]],
    outputs: dict[int, Tensor],
    module_name: dict[int, str],
    used_at: dict[str, int],
) -> ModelLayout:
    weights: list[nn.Module] = []
    slots: dict[int, nn.Module] = {}  # weight layer index (1-based) -> its norm
    for kind, m in events:
        if kind == "pre" and _is_weight(m) and all(m is not w for w in weights):
            weights.append(m)
        if kind == "pre" and weights and is_norm(m):
            i = len(weights)
            if i not in slots and all(m is not s for s in slots.values()):
                slots[i] = m
    if not weights:
        raise ValueError("the forward pass ran no Conv or Linear layer: nothing to probe")
    norm_slots, present = [], []
    for i in range(1, len(weights)):
        norm_slots.append(slots.get(i, nn.Identity()))
        present.append(i in slots)
    widths = []
    for slot, ok, layer in zip(norm_slots, present, weights, strict=False):
        out = outputs.get(id(slot if ok else layer))
        widths.append(int(out.shape[1]) if out is not None and out.dim() > 1 else 1)
    layer_of = _param_layers(model, weights, slots, used_at)
    return ModelLayout(
        model=model,
        weight_layers=weights,
        weight_names=[module_name[id(w)] for w in weights],
        norm_slots=norm_slots,
        slot_present=present,
        widths=widths,
        layer_of=layer_of,
    )


def _param_layers(
    model: nn.Module, weights: list[nn.Module], slots: dict[int, nn.Module], used_at: dict[str, int]
) -> dict[str, int]:
    """Parameter name -> weight layer: a weight layer's own i, its slot's (and the slot's
    children's) i, otherwise the number of weight layers begun when an op first read it; a
    parameter no op read (an unused module) follows the last layer: it changes no loss."""
    owner = {id(w): i for i, w in enumerate(weights, start=1)}
    for i, s in slots.items():
        owner.update({id(m): i for m in s.modules()})
    index = {}
    for mod_name, m in model.named_modules():
        for p_name, _ in m.named_parameters(recurse=False):
            name = f"{mod_name}.{p_name}" if mod_name else p_name
            index[name] = owner.get(id(m), used_at.get(name, len(weights)))
    # named_parameters() drops shared tensors' later names: keep exactly its names.
    return {n: index[n] for n, _ in model.named_parameters()}


class _FirstUse(TorchFunctionMode):
    """Records, per parameter, how many weight layers had begun when a torch op first read it.

    Module hooks alone cannot place a parameter a container uses itself (a learnable input
    scale, a residual gate): it may be read before, between or after the container's children.
    """

    def __init__(self, names: dict[int, str]) -> None:
        super().__init__()
        self.names = names
        self.at: dict[str, int] = {}
        self.begun: list[nn.Module] = []  # weight layers whose forward has begun, in order

    def begin(self, module: nn.Module) -> None:
        if _is_weight(module) and all(module is not w for w in self.begun):
            self.begun.append(module)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        for a in tree_flatten((args, kwargs))[0]:
            if isinstance(a, Tensor) and id(a) in self.names:
                name = self.names[id(a)]
                if name not in self.at:
                    self.at[name] = len(self.begun)
        return func(*args, **kwargs)


@contextlib.contextmanager
def _untouched(model: nn.Module) -> Iterator[None]:
    """Every buffer of `model` and every random generator (global, and any a module holds,
    such as the engine's noisy norms) as they were before the block."""
    buffers = [(b, b.detach().clone()) for b in model.buffers()]
    with preserved_rng(model):
        try:
            yield
        finally:
            with torch.no_grad():
                for b, saved in buffers:
                    b.copy_(saved)


def module_generators(model: nn.Module) -> list[torch.Generator]:
    """The torch.Generator objects held by `model`'s modules, each once."""
    gens: dict[int, torch.Generator] = {}
    for m in model.modules():
        for value in vars(m).values():
            if isinstance(value, torch.Generator):
                gens[id(value)] = value
    return list(gens.values())


@contextlib.contextmanager
def preserved_rng(model: nn.Module | None = None) -> Iterator[None]:
    """The global CPU and (initialised) CUDA generators, and those `model` holds, restored
    after the block."""
    cpu = torch.get_rng_state()
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None
    own = [(g, g.get_state()) for g in (module_generators(model) if model is not None else [])]
    try:
        yield
    finally:
        torch.set_rng_state(cpu)
        if cuda is not None:
            torch.cuda.set_rng_state_all(cuda)
        for g, state in own:
            g.set_state(state)
