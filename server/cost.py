"""What a run will take, estimated from its spec alone (no torch): the server's limits check
these numbers before a run is accepted, and the new-experiment form shows them.

- `params`: the exact parameter count of the model worker/engine/models.py (or resnet.py)
  builds (weights, biases, the affine parts of the norms; tests/engine/test_cost.py and
  tests/engine/test_resnet_cost.py compare it with the engine's own models).
- `activation_elements`: per training batch, the elements of every layer output the engine's
  model produces (weight layers, norm slots, ReLUs, pools, a ResNet's shortcut sums and padded
  shortcuts; Flatten is a view and "none" an identity, so they add nothing). Exact, checked
  against forward hooks on a real batch.
- `activation_mb`: those elements in bytes (4 each, 8 in a float64 run; 2 for weight-layer,
  ReLU and pool outputs under bf16), times ACTIVATION_FACTOR for what autograd keeps besides
  layer outputs (the intermediates of the l1/l2/linf and noise layers, masks), times the
  heaviest probe's own need: K parameter sets at once for the batched landscape probe, a
  second graph for sharpness's double backward. The test checks it bounds the tensors
  autograd really saves.
- `memory_mb`: activation_mb plus parameter-sized state: weights and gradients, the
  optimiser's slots (momentum 1, Adam 2), distance's copy of w_0, the probes' shadow weights
  and gradients (and K stacked copies when batched).
- `dataset_mb`: the dataset's tensors as the engine holds them (inputs in the run's dtype,
  labels int64). Parameter-sized state is in the run's dtype too.
- `cost_steps`: the whole run in training-step units: steps x the probes' worst case
  (RunSpec.probe_cost("most"): sharpness at its iteration cap) plus test evaluations (a
  forward pass over the test set, a third of a training pass per sample).

`drivers` names, for each quantity, the spec fields that drive it, most responsible first: a
limit's 422 points at the first of them the request set.

A plug-in model or dataset (worker/engine/plugins.py) is known only to the workers that have
it: what the spec alone cannot tell is listed in `unknown` (NaN, or 0 for counts) and never
checked against a limit, so such a run is bounded by its steps, batch sizes and `cost_steps`,
which the probes fix (with a plug-in dataset, a lower bound: test evaluations not counted).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from server.spec import RESNET_WIDTHS, SHIFT_FREE_NORMS, VGG_CONFIGS, RunSpec

MB = 1024 * 1024
# Bytes autograd keeps per layer-output element, beyond the outputs themselves: covers the
# Lp and noise layers' intermediates (checked by tests/engine/test_cost.py for every norm).
ACTIVATION_FACTOR = 3.0
# A forward pass is about a third of a forward+backward training pass, per sample.
FORWARD_SHARE = 1 / 3

# Fixed datasets as the engine loads them: (input shape, outputs, train rows, test rows).
DATASETS: dict[str, tuple[tuple[int, ...], int, int, int]] = {
    "cifar10": ((3, 32, 32), 10, 50_000, 10_000),
    "digits": ((1, 8, 8), 10, 1_438, 359),
    "mnist1d": ((40,), 10, 4_000, 1_000),
}


@dataclass(frozen=True)
class Shape:
    """The data a model sees: per-sample input shape, outputs, train and test rows."""

    in_shape: tuple[int, ...]
    n_outputs: int
    n_train: int
    n_test: int


@dataclass(frozen=True)
class Cost:
    params: int
    activation_elements: int
    activation_mb: float
    memory_mb: float
    dataset_mb: float
    cost_steps: float
    drivers: dict[str, tuple[str, ...]] = field(default_factory=dict)
    unknown: tuple[str, ...] = ()  # quantities a plug-in leaves unknown (see the module doc)


class UnknownCost(ValueError):
    """The quantity depends on a plug-in model or dataset, which the server never loads."""


def data_shape(spec: RunSpec) -> Shape:
    if spec.plugin_dataset:
        raise UnknownCost(f"dataset {spec.dataset!r} is a plug-in: its shape is unknown here")
    if spec.dataset == "gaussian_linear":
        d = spec.input_dim
        return Shape((d,), d, spec.n_samples, spec.n_samples)
    in_shape, n_out, n_train, n_test = DATASETS[spec.dataset]
    if spec.dataset == "digits" and "size" in spec.dataset_options:  # resized at load
        size = spec.dataset_options["size"]
        in_shape = (in_shape[0], size, size)
    return Shape(in_shape, n_out, n_train, n_test)


@dataclass
class _Tally:
    """Per-sample layer outputs (full-precision and bf16-able) and parameters of a model; for
    snapshots, its state_dict (tensors, BatchNorm buffers); for time, multiply-adds."""

    params: int = 0
    norm_out: int = 0  # norm slot outputs: kept at 4 bytes (autocast runs norms in fp32)
    other_out: int = 0  # weight-layer, ReLU and pool outputs: 2 bytes under bf16
    buffers: int = 0  # BatchNorm running mean and variance elements (float32)
    counters: int = 0  # BatchNorm num_batches_tracked (one int64 each)
    tensors: int = 0  # state_dict entries
    macs: int = 0  # multiply-adds of one sample's forward pass through the weight layers

    def weight(self, n_params: int, out: int, *, macs: int, bias: bool) -> None:
        self.params += n_params
        self.other_out += out
        self.macs += macs
        self.tensors += 2 if bias else 1

    def norm(self, spec: RunSpec, channels: int, out: int) -> None:
        if spec.norm == "none":  # nn.Identity: no parameters, no new tensor
            return
        if spec.norm != "noise":  # every other norm has a per-channel affine (gamma, beta)
            self.params += 2 * channels
            self.tensors += 2
        if spec.norm in ("batch", "noisy_batch"):  # torch BatchNorm: running statistics
            self.buffers += 2 * channels
            self.counters += 1
            self.tensors += 3
        self.norm_out += out

    def elementwise(self, out: int) -> None:  # ReLU, max-pool
        self.other_out += out


def _vgg(spec: RunSpec, shape: Shape) -> _Tally:
    t = _Tally()
    channels, h, w = shape.in_shape
    widths = iter(spec.layer_widths())
    for c in VGG_CONFIGS[spec.vgg_config]:
        if c == "M":
            if h >= 2 and w >= 2:  # the engine skips a pool once the map is below 2x2
                h, w = h // 2, w // 2
                t.elementwise(channels * h * w)
            continue
        out = next(widths)
        t.weight(channels * out * 9 + out, out * h * w, macs=channels * out * 9 * h * w,
                 bias=True)
        t.norm(spec, out, out * h * w)
        t.elementwise(out * h * w)
        channels = out
    t.weight(channels * h * w * shape.n_outputs + shape.n_outputs, shape.n_outputs,
             macs=channels * h * w * shape.n_outputs, bias=True)
    return t


def _dense(spec: RunSpec, shape: Shape) -> _Tally:
    """MLP (bias, ReLU) and DLN (no bias, no nonlinearity)."""
    t = _Tally()
    mlp = spec.model == "mlp"
    sizes = [math.prod(shape.in_shape)] + [int(spec.width)] * (spec.depth - 1) + [shape.n_outputs]
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        t.weight(n_in * n_out + (n_out if mlp else 0), n_out, macs=n_in * n_out, bias=mlp)
        if i < spec.depth - 1:
            t.norm(spec, n_out, n_out)
            if mlp:
                t.elementwise(n_out)
    return t


def _resnet(spec: RunSpec, shape: Shape) -> _Tally:
    """worker/engine/resnet.py: stem, 3 stages of n basic blocks, global pool, classifier."""
    t = _Tally()
    channels, h, w = shape.in_shape
    bias = spec.norm in SHIFT_FREE_NORMS

    def conv(c_in: int, c_out: int, stride: int) -> None:
        nonlocal h, w
        h, w = (h - 1) // stride + 1, (w - 1) // stride + 1  # 3x3, padding 1
        t.weight(c_in * c_out * 9 + (c_out if bias else 0), c_out * h * w,
                 macs=c_in * c_out * 9 * h * w, bias=bias)
        t.norm(spec, c_out, c_out * h * w)

    conv(channels, RESNET_WIDTHS[0], 1)
    t.elementwise(RESNET_WIDTHS[0] * h * w)  # ReLU
    channels = RESNET_WIDTHS[0]
    for s, width in enumerate(RESNET_WIDTHS):
        for b in range((spec.resnet_depth - 2) // 6):
            stride = 2 if s > 0 and b == 0 else 1
            conv(channels, width, stride)
            t.elementwise(width * h * w)  # ReLU
            conv(width, width, 1)
            if spec.skip:
                if stride != 1 or width != channels:
                    t.elementwise(width * h * w)  # the subsampled, zero-padded shortcut
                t.norm_out += width * h * w  # the sum, at the norm output's precision
            t.elementwise(width * h * w)  # ReLU
            channels = width
    t.elementwise(channels)  # global average pool
    t.weight(channels * shape.n_outputs + shape.n_outputs, shape.n_outputs,
             macs=channels * shape.n_outputs, bias=True)
    return t


def tally(spec: RunSpec) -> _Tally:
    if spec.plugin_model:
        raise UnknownCost(f"model {spec.model!r} is a plug-in: its size is unknown here")
    shape = data_shape(spec)
    builders = {"vgg": _vgg, "resnet": _resnet}
    return builders.get(spec.model, _dense)(spec, shape)


def train_batch(spec: RunSpec) -> int:
    """Rows per training step: the engine's BatchOrder takes the whole set when the batch
    is None or no smaller than it."""
    n = data_shape(spec).n_train
    return n if spec.batch_size is None else min(spec.batch_size, n)


def word(spec: RunSpec) -> int:
    """Bytes of one float of the run: its dtype's (the Trainer casts model and data)."""
    return 8 if spec.dtype == "float64" else 4


def dataset_bytes(spec: RunSpec) -> int:
    s = data_shape(spec)
    rows = s.n_train + s.n_test
    if spec.dataset == "gaussian_linear":  # x and y = A x, in the run's dtype, plus A itself
        d = spec.input_dim
        return word(spec) * (2 * rows * d) + 4 * d * d
    return rows * (word(spec) * math.prod(s.in_shape) + 8)


def _probe_activation_factor(spec: RunSpec) -> int:
    p = spec.probes
    batched = len(p.landscape.multipliers) if p.landscape.every and p.landscape.batched else 1
    sharp = 2 if p.sharpness.every else 1
    return max(batched, sharp)


def _state_copies(spec: RunSpec) -> int:
    """Parameter-sized tensors alive during a step."""
    p = spec.probes
    slots = 2 if spec.optimizer == "adam" else int(spec.momentum > 0)
    copies = 2 + slots + (1 if p.distance.every else 0)  # weights, grads, slots, w_0
    if p.landscape.every or p.ics.every or p.sharpness.every:
        copies += 2  # the probes' shadow weights and their gradients
    if p.landscape.every and p.landscape.batched:
        copies += 2 * len(p.landscape.multipliers)  # K stacked weights and gradients
    return copies


def eval_steps(spec: RunSpec) -> float:
    """Test evaluations over the run, in training-step units."""
    if not spec.eval_every:
        return 0.0
    n_evals = math.ceil(spec.steps / spec.eval_every) + 1  # step 0, every N, and at T
    return n_evals * data_shape(spec).n_test * FORWARD_SHARE / train_batch(spec)


def estimate(spec: RunSpec) -> Cost:
    if spec.plugin_model or spec.plugin_dataset:
        return _plugin_estimate(spec)
    t = tally(spec)
    batch = train_batch(spec)
    elements = batch * (t.norm_out + t.other_out)
    w = word(spec)
    other_bytes = 2 if spec.bf16 else w
    act_bytes = batch * (w * t.norm_out + other_bytes * t.other_out) * ACTIVATION_FACTOR
    activation_mb = act_bytes * _probe_activation_factor(spec) / MB
    state_mb = w * t.params * _state_copies(spec) / MB
    # Admission charges the worst case (sharpness at its iteration cap), never the floor.
    floor = spec.probe_cost("most")["floor"]
    evals = eval_steps(spec)
    return Cost(
        params=t.params,
        activation_elements=elements,
        activation_mb=activation_mb,
        memory_mb=activation_mb + state_mb,
        dataset_mb=dataset_bytes(spec) / MB,
        cost_steps=spec.steps * floor + evals,
        drivers={
            "params": _param_drivers(spec),
            "memory": _activation_drivers(spec) if activation_mb >= state_mb
            else (*_param_drivers(spec), "optimizer"),
            "dataset": _dataset_drivers(spec),
            "cost_steps": _cost_drivers(spec, evals),
        },
    )


def _plugin_estimate(spec: RunSpec) -> Cost:
    """What the spec alone says of a run with a plug-in model or dataset (module doc)."""
    unknown = ["params", "activation_elements", "activation_mb", "memory_mb"]
    if spec.plugin_dataset:
        unknown.append("dataset_mb")
        dataset_mb, evals = math.nan, 0.0  # evaluations: unknown test set, not counted
    else:
        dataset_mb, evals = dataset_bytes(spec) / MB, eval_steps(spec)
    return Cost(
        params=0, activation_elements=0, activation_mb=math.nan, memory_mb=math.nan,
        dataset_mb=dataset_mb, cost_steps=spec.steps * spec.probe_cost("most")["floor"] + evals,
        drivers={"cost_steps": _cost_drivers(spec, evals)}
        | ({} if spec.plugin_dataset else {"dataset": _dataset_drivers(spec)}),
        unknown=tuple(unknown),
    )


def _param_drivers(spec: RunSpec) -> tuple[str, ...]:
    if spec.model == "vgg":
        return ("width", "vgg_config", "model", "dataset")
    if spec.model == "resnet":
        return ("resnet_depth", "model", "dataset")
    inputs = "input_dim" if spec.dataset == "gaussian_linear" else "dataset"
    return ("width", "depth", inputs, "model")


def _activation_drivers(spec: RunSpec) -> tuple[str, ...]:
    rows = ("batch_size", "n_samples") if spec.batch_size is None else ("batch_size",)
    probe = ("probes.landscape.batched", "probes.sharpness.every")
    return (*rows, *_param_drivers(spec), "bf16", *probe)


def _dataset_drivers(spec: RunSpec) -> tuple[str, ...]:
    if spec.dataset != "gaussian_linear":
        return ("dataset",)
    dims = ("n_samples", "input_dim")
    return (*(dims if spec.n_samples >= spec.input_dim else dims[::-1]), "dataset")


def _cost_drivers(spec: RunSpec, evals: float) -> tuple[str, ...]:
    """The probe (or evaluation) that costs the most first when it costs more than training
    itself, then steps; else steps first."""
    p = spec.probe_cost("most")
    per_step = {
        "sharpness": (p["sharpness"], ("probes.sharpness.every", "probes.sharpness.max_iters",
                                   "probes.sharpness.iters")),
        "landscape": (p["landscape"], ("probes.landscape.every", "probes.landscape.multipliers")),
        "ics": (p["ics"], ("probes.ics.every", "probes.ics.layers")),
        "eval": (evals / spec.steps, ("eval_every",)),
    }
    ranked = sorted(per_step.values(), key=lambda v: v[0], reverse=True)
    fields = tuple(f for _, fs in ranked for f in fs)
    return (*fields, "steps") if ranked[0][0] > 1 else ("steps", *fields)


# -- snapshots on disk ----------------------------------------------------------------------

# torch.save of one snapshot ({"step", "spec", "model": state_dict}, worker/engine/snapshots.py)
# beyond its tensors' bytes and the spec's JSON: zip records (headers, 64-byte alignment) and
# the pickled keys. Measured once (torch 2.5, torch.save of the engine's own snapshots of 57
# models: mlp of depth 2-8 and width 8-64, vgg-11/16, resnet-20, dln; no norm, BatchNorm,
# layer or group norm): a least-squares fit gives 621 bytes a file and 278 per state_dict
# entry, within 1.3 KB of every file (each tensor's record is aligned to 64 bytes, which the
# fit can only average); tests/server/test_experiment_cost.py checks real files.
SNAPSHOT_FILE_OVERHEAD = 621
SNAPSHOT_TENSOR_OVERHEAD = 278
DTYPE_BYTES = {"float32": 4, "float64": 8, "bfloat16": 2, "float16": 2}


def snapshot_steps(spec: RunSpec, upto: int | None = None) -> int:
    """Snapshots a run saves at steps 0..upto (default: the whole run): step 0, the last
    step (T), every `snapshots.every`-th step and the listed steps (SnapshotSpec.due)."""
    cfg, last = spec.snapshots, spec.steps
    upto = last if upto is None else min(upto, last)
    listed = {0, *(s for s in cfg.steps if s <= upto), *((last,) if last <= upto else ())}
    if not cfg.every:
        return len(listed)
    return upto // cfg.every + 1 + sum(1 for s in listed if s % cfg.every)


def snapshot_file_bytes(spec: RunSpec) -> int:
    """One snapshot file: (parameters + BatchNorm buffers) x bytes per element, the int64
    batch counters, the spec's JSON and the measured per-file and per-tensor overhead."""
    t = tally(spec)
    element = DTYPE_BYTES.get(str(getattr(spec, "dtype", "float32")), 4)
    return (element * (t.params + t.buffers) + 8 * t.counters
            + len(spec.model_dump_json().encode()) + SNAPSHOT_FILE_OVERHEAD
            + SNAPSHOT_TENSOR_OVERHEAD * t.tensors)
