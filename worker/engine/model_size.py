"""What a built network and its data weigh, recorded in run.info["size"] when a run is built,
so that the server can bound an analysis of a plug-in run (server/analysis_cost.py) whose
model and dataset it never loads: the parameter count, the normalisation buffers, the
per-sample layer outputs (as server/cost.py tallies them for built-in models) and the data's
shape and bytes.

The per-sample outputs come from one forward pass of one training sample in eval mode, under
no_grad, with the global random generators (and the run's `generators`) restored afterwards:
nothing of the run changes (no BN statistics move, no dropout draws), so training stays
bit-identical.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

NORMS = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm)
VIEWS = (nn.Identity, nn.Flatten, nn.Unflatten)  # no new tensor (server/cost.py skips them)


def model_size(net: nn.Module, data: Any,
               generators: tuple[torch.Generator, ...] = ()) -> dict[str, Any]:
    """run.info["size"]: {params, bn_buffers, norm_out, other_out, n_layers, in_shape,
    n_outputs, n_train, n_test, dataset_bytes}; n_layers: the network's normalised layers
    (its norm slots, which the activation histograms and the dashboard count)."""
    states = [g.get_state() for g in generators]  # the run's own generators, as found
    try:
        norm_out, other_out = _outputs(net, data.x_train[:1])
    finally:
        for g, state in zip(generators, states, strict=True):
            g.set_state(state)
    tensors = (data.x_train, data.y_train, data.x_test, data.y_test)
    return {
        "params": sum(p.numel() for p in net.parameters()),
        "bn_buffers": sum(b.numel() for m in net.modules() if isinstance(m, NORMS)
                          for b in m.buffers(recurse=False) if b.is_floating_point()),
        "norm_out": norm_out,
        "other_out": other_out,
        "n_layers": len(getattr(net, "norm_slots", ())),
        "in_shape": list(data.in_shape),
        "n_outputs": int(data.n_outputs),
        "n_train": int(data.x_train.shape[0]),
        "n_test": 0 if data.x_test is None else int(data.x_test.shape[0]),
        "dataset_bytes": sum(t.numel() * t.element_size() for t in tensors if t is not None),
    }


def _outputs(net: nn.Module, x: torch.Tensor) -> tuple[int, int]:
    """Per-sample output elements of the leaf modules: (norm layers, all others)."""
    counts = [0, 0]

    def hook(module: nn.Module, _inputs: Any, out: Any) -> None:
        if isinstance(out, torch.Tensor) and not isinstance(module, VIEWS):
            counts[0 if isinstance(module, NORMS) else 1] += out[0].numel()

    leaves = [m for m in net.modules() if not any(True for _ in m.children())]
    handles = [m.register_forward_hook(hook) for m in leaves]
    was_training = net.training
    devices = [x.device.index] if x.device.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=devices), torch.no_grad():
            net.eval()
            net(x)
    finally:
        net.train(was_training)
        for h in handles:
            h.remove()
    return counts[0], counts[1]
