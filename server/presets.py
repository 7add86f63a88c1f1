"""Named experiments: the paper's figures at full scale, and quick CPU demonstrations.

A preset is a base spec (overrides of RunSpec's defaults) plus `vary`: the comparison the
figure makes (e.g. norm: [none, batch]). Running a preset runs the cross product as one
experiment, so every run shares seed and data order. Full-scale VGG presets read CIFAR-10 and
want a GPU; `quick-*` presets show the BatchNorm effect on 2 CPU cores in about two minutes.

Analyses (server/analysis_spec.py): every preset here varies the normalisation, and each gets
DEFAULT_ANALYSES, run on every run's final network as soon as the run succeeds: a surface
(two random filter-normalised directions, direction seed 0 shared by all runs, BN mode
`batch`, 21 x 21 on the seeded 2,048-sample evaluation subset) and a spectrum (the spec's
defaults: top-5 eigenvalues, Hutchinson trace, SLQ density, gradient share). The same
directions and evaluation set for every run is what makes the runs' surfaces comparable side
by side. The quick presets' analyses (QUICK_ANALYSES) use 512 evaluation samples and fewer
Hutchinson probes and density vectors, to finish with their runs in about a minute on two
CPU cores. An experiment may replace them (ExperimentCreate.analyses) or opt out with [].
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from server.spec import RunSpec, build_spec, expand_vary


def figures_label(figures: str) -> str:
    """How a preset's figures are named to a reader: the paper's as 'Fig 1, 3a, 4'; another
    paper's already name it and say 'Fig' themselves ('Li et al. 2018, Fig 5')."""
    return f"Fig {figures}" if figures[:1].isdigit() else figures


@dataclass(frozen=True)
class Preset:
    name: str
    figures: str  # which of the paper's figures it reproduces ("" for demos)
    description: str
    base: dict[str, Any]
    vary: dict[str, list[Any]] = field(default_factory=dict)
    # AnalysisSpec dicts run on each run's last step once it succeeds (see the module doc).
    analyses: tuple[dict[str, Any], ...] = ()

    def specs(self) -> list[RunSpec]:
        return [build_spec(d) for d in expand_vary(self.base, self.vary)]


# Paper VGG protocol (App. A.1): VGG-16, CIFAR-10, SGD LR 0.1, batch 128, 15k steps.
_VGG16 = {
    "model": "vgg", "vgg_config": 16, "width": 1.0, "dataset": "cifar10",
    "optimizer": "sgd", "lr": 0.1, "batch_size": 128, "steps": 15000,
    "loss": "cross_entropy", "eval_every": 500,
    "probes": {
        "landscape": {"every": 100, "multipliers": [0.5, 1.0, 2.0, 4.0]},
        "ics": {"every": 100, "layers": [5, 10]},
        "activations": {"every": 100},
        "sharpness": {"every": 0},
    },
}
# Paper DLN protocol: 25 layers of 10x10, n=1000 Gaussian inputs, full-batch GD, LR 1e-6, 10k steps.
# In float64: 2,500 parameters cost nothing more, and in float32 one ulp of one initial weight
# moves the l1 run's loss by 21 % and BatchNorm's ICS medians by 47 % (docs/reproduction.md).
_DLN = {
    "model": "dln", "depth": 25, "width": 10, "dataset": "gaussian_linear", "dtype": "float64",
    "n_samples": 1000, "input_dim": 10, "optimizer": "sgd", "lr": 1e-6, "batch_size": None,
    "steps": 10000, "loss": "sum_squares", "eval_every": 0,
    "probes": {
        "landscape": {"every": 50, "multipliers": [0.01, 0.1, 1.0, 10.0, 30.0]},
        "ics": {"every": 50, "layers": [9, 17]},
        "activations": {"every": 50},
        "sharpness": {"every": 0},
    },
}
# Reduced VGG for CPUs: VGG-11 at width 1/4 on scikit-learn's digits (offline, 8x8).
_QUICK_VGG = {
    "model": "vgg", "vgg_config": 11, "width": 0.25, "dataset": "digits",
    "optimizer": "sgd", "lr": 0.1, "batch_size": 128, "steps": 600,
    "loss": "cross_entropy", "eval_every": 50,
    "probes": {
        "landscape": {"every": 20, "multipliers": [0.5, 1.0, 2.0, 4.0]},
        "ics": {"every": 20, "layers": [3, 6]},
        "activations": {"every": 20},
    },
}

# Li et al. 2018 ("Visualizing the loss landscape of neural nets"), skip connections x BatchNorm
# on CIFAR ResNets (worker/engine/resnet.py). Their optimiser: SGD, LR 0.1, momentum 0.9,
# weight decay 5e-4, batch 128. They train 300 epochs with the LR cut 10x three times; the
# engine has one constant LR, so this runs He et al.'s 64,000 steps (164 epochs) at LR 0.1.
# ResNet-56 is where the "noshort" net's landscape turns chaotic in their Fig 5.
_RESNET56 = {
    "model": "resnet", "resnet_depth": 56, "dataset": "cifar10",
    "optimizer": "sgd", "lr": 0.1, "momentum": 0.9, "weight_decay": 5e-4, "batch_size": 128,
    "steps": 64000, "loss": "cross_entropy", "eval_every": 1000,
    "probes": {
        "landscape": {"every": 200, "multipliers": [0.5, 1.0, 2.0, 4.0]},
        "ics": {"every": 200, "layers": [10, 46]},  # mid stage 1, mid stage 3
        "activations": {"every": 200},
        "sharpness": {"every": 0},
    },
}
# Its CPU version: ResNet-20 (0.27M parameters) on digits, plain SGD, 300 steps. Measured
# (one thread's CPU time, on a shared machine): training 11-15 s a run; the quick surface
# 17-19 s and the quick spectrum 30-55 s a run (at 400 steps). Skip without BN reaches 96.9%
# test accuracy, noshort without BN stays at chance (8.9%; its surface is flat at loss 2.3),
# both with BN 97.5-98.3%. Without BN the skip net's median effective beta is 4x and its
# gradient change 47x those with BN, and its surface climbs to 653 at the grid's edge (9.4 with
# BN, at 400 steps).
_QUICK_RESNET = {
    "model": "resnet", "resnet_depth": 20, "dataset": "digits",
    "optimizer": "sgd", "lr": 0.1, "batch_size": 128, "steps": 300,
    "loss": "cross_entropy", "eval_every": 50,
    "probes": {
        "landscape": {"every": 20, "multipliers": [0.5, 1.0, 2.0, 4.0]},
        "ics": {"every": 20, "layers": [5, 15]},  # stage 1, stage 3
        "activations": {"every": 20},
    },
}
_SKIP_X_BN = {"skip": [True, False], "norm": ["none", "batch"]}


# The default end-of-training analyses of a paired preset. At full scale (VGG-16, 14.7M
# parameters, CIFAR-10) they fit the server's default analysis limits as they are
# (server/analysis_cost.py; tests/server/test_api_experiment_analyses.py checks every
# preset): the surface is 441 points and about 4.7 GiB, the spectrum 406 HVPs and about
# 12.8 GiB (mostly its 80-vector float64 Lanczos basis) of the 16 GiB default, so no
# smaller grid or evaluation set is needed there.
DEFAULT_SURFACE: dict[str, Any] = {
    "kind": "surface", "directions": {"kind": "random", "seed": 0}, "bn_mode": "batch",
    "x": {"lo": -1.0, "hi": 1.0, "points": 21}, "y": {"lo": -1.0, "hi": 1.0, "points": 21},
}
DEFAULT_SPECTRUM: dict[str, Any] = {"kind": "spectrum", "bn_mode": "batch"}
DEFAULT_ANALYSES: tuple[dict[str, Any], ...] = (DEFAULT_SURFACE, DEFAULT_SPECTRUM)
# The quick presets' are cheaper, so that runs and analyses together take about a minute on
# two CPU cores. With the defaults above, quick-vgg took 224 s (15 s training, 210 s of
# analyses, the spectra most of it) on one worker; with these 54 s (15 s + 40 s), quick-mlp
# 11 s, quick-dln 16 s, quick-vgg-noisy 76 s (in process, one task after the other, on a
# shared 2-core machine). The same 21 x 21 grid and directions on 512 evaluation samples
# (4 batches of the training size, so BN still sees training-size batches), and a spectrum
# with 20 Hutchinson probes and a 40-step x 2-vector density (136 HVPs instead of 406).
QUICK_EVAL_SAMPLES = 512
QUICK_ANALYSES: tuple[dict[str, Any], ...] = (
    {**DEFAULT_SURFACE, "eval_samples": QUICK_EVAL_SAMPLES},
    {**DEFAULT_SPECTRUM, "eval_samples": QUICK_EVAL_SAMPLES,
     "spectrum": {"trace_probes": 20, "slq_steps": 40, "slq_vectors": 2}},
)


def _with(base: dict[str, Any], **changes: Any) -> dict[str, Any]:
    return {**base, **changes}


def _paired(p: Preset) -> Preset:
    """A preset comparing normalisations gets the default analyses (the quick ones the
    cheaper set) unless it names its own."""
    if p.analyses or "norm" not in p.vary:
        return p
    return replace(p, analyses=QUICK_ANALYSES if p.name.startswith("quick-")
                   else DEFAULT_ANALYSES)


PRESETS: dict[str, Preset] = {
    p.name: _paired(p)
    for p in [
        Preset("paper-vgg16", "1, 3a, 4",
               "VGG-16 on CIFAR-10 at LR 0.1, with and without BatchNorm: accuracy, ICS, "
               "landscape, predictiveness, beta-smoothness.",
               _VGG16, {"norm": ["none", "batch"]}),
        Preset("paper-vgg16-lr0.5", "1, 12",
               "VGG-16 at LR 0.5: BatchNorm still trains, the plain net stays at chance.",
               _with(_VGG16, lr=0.5), {"norm": ["none", "batch"]}),
        Preset("paper-vgg16-noisy", "2",
               "Standard, BatchNorm and noisy BatchNorm (Algorithm 1), and the same noise "
               "without BatchNorm: distributional stability is not what helps.",
               _VGG16, {"norm": ["none", "batch", "noisy_batch", "noise"]}),
        Preset("paper-vgg16-lp", "5a, 13",
               "VGG-16 with BatchNorm and l1, l2, linf normalisation (section 3.3).",
               _VGG16, {"norm": ["none", "batch", "l1", "l2", "linf"]}),
        Preset("paper-dln", "9, 10, 11",
               "Deep linear network, full-batch GD at LR 1e-6: landscape, predictiveness, "
               "beta-smoothness, activations, with and without BatchNorm.",
               _DLN, {"norm": ["none", "batch"]}),
        Preset("paper-dln-ics", "3b",
               "Deep linear network ICS (layers 9 and 17) at LR 1e-6 and 1e-7.",
               _with(_DLN, probes={"ics": {"every": 50, "layers": [9, 17]}}),
               {"norm": ["none", "batch"], "lr": [1e-6, 1e-7]}),
        Preset("paper-dln-lp", "5b",
               "Deep linear network training loss with no norm, BatchNorm and l1, l2, linf.",
               _DLN, {"norm": ["none", "batch", "l1", "l2", "linf"]}),
        Preset("quick-vgg", "1, 4 (reduced)",
               "VGG-11 at width 1/4 on digits, 600 steps (~25 s on 2 cores): with BatchNorm "
               "it reaches ~99% test accuracy, without it stays at chance (cf. Fig 1).",
               _QUICK_VGG, {"norm": ["none", "batch"]}),
        Preset("quick-vgg-noisy", "2 (reduced)",
               "Reduced Fig 2: none, batch, noisy batch on VGG-11/4 on digits.",
               _QUICK_VGG, {"norm": ["none", "batch", "noisy_batch"]}),
        Preset("quick-mlp", "",
               "A 6-layer MLP on mnist1d at LR 0.5 (~10 s): similar accuracy, but without "
               "BatchNorm gradient predictiveness is ~9x and effective beta ~3x larger.",
               {"model": "mlp", "depth": 6, "width": 128, "dataset": "mnist1d",
                "lr": 0.5, "batch_size": 128, "steps": 800, "eval_every": 50,
                "probes": {"landscape": {"every": 20}, "ics": {"every": 20, "layers": [3, 5]},
                           "activations": {"every": 20}, "sharpness": {"every": 100}}},
               {"norm": ["none", "batch"]}),
        Preset("quick-dln", "3b, 10 (reduced)",
               "The paper's deep linear network for 1,000 steps: predictiveness and beta "
               "differ by orders of magnitude with and without BatchNorm.",
               _with(_DLN, steps=1000, probes={**_DLN["probes"],
                     "landscape": {"every": 10, "multipliers": [0.01, 0.1, 1.0, 10.0, 30.0]},
                     "ics": {"every": 10, "layers": [9, 17]}, "activations": {"every": 10}}),
               {"norm": ["none", "batch"]}),
        Preset("paper-resnet56-skip", "Li et al. 2018, Fig 5",
               "ResNet-56 on CIFAR-10 with and without skip connections, with and without "
               "BatchNorm (Li et al. 2018's comparison): surfaces, Hessian spectra, "
               "predictiveness.",
               _RESNET56, _SKIP_X_BN),
        Preset("quick-resnet", "Li et al. 2018, Fig 5 (reduced)",
               "ResNet-20 on digits, with and without skips and BatchNorm, 300 steps: "
               "without both it stays at chance; skips alone train it, with a rougher "
               "landscape (larger beta and gradient change) than with BatchNorm.",
               _QUICK_RESNET, _SKIP_X_BN),
    ]
}


def get_preset(name: str) -> Preset:
    try:
        return PRESETS[name]
    except KeyError:
        raise KeyError(f"unknown preset {name!r}; known: {', '.join(PRESETS)}") from None
