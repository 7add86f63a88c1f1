"""Santurkar, Tsipras, Ilyas and Madry 2018, "How Does Batch Normalization Help
Optimization?": which experiments make which of the paper's figures, what the paper reports
for each, and the checks that turn our measurements into a verdict. See docs/reproduction.md
for the results.

Figures made from the same runs share one experiment (Fig 9, 10 and 11 are one set of DLN
runs, as in the paper). The DLN is reproduced in full at every scale but `quick`; VGG at
reduced scale on offline data at `cpu`, VGG-16 on CIFAR-10 at `paper`.

Seeds. At quick and cpu scale every experiment runs the seeds of plans.SEEDS (three), varied
as `seed` and nothing else, and each claim is judged per seed (verdicts.py: "holds in k of
n"). The seed sets everything random in a run (worker/engine): the initial weights (models.py,
resnet.py), the minibatch order (data/batches.py: a pure function of seed and step), BN's
noise in noisy BatchNorm (state.NoiseStream), the sampled unit of the activation probe and,
for the DLN, the data itself (data/synthetic.py: A, x_train and x_test are drawn from the
seed). It does not change the digits and mnist1d splits (fixed, so that seeds are tested on
the same images). Runs compared across normalisations or LRs share a seed, so within a seed
they start from the same weights (up to the norm layers' own parameters) and see the same
batches in the same order; only the seed tells one seed's runs from another's.

Analyses. No claim of this paper reads an end-of-training analysis (surfaces, spectra), so the
plans at quick and cpu scale (DLN, VGG, MLP) opt out of their presets' (`analyses=()`): a surface
and a spectrum for each of three seeds' runs would cost more than the training and decide
nothing here.
"""

from __future__ import annotations

from typing import Any

from server.reproduction.plans import SEEDS, Experiment, Paper, Plan
from server.reproduction.santurkar_checks import (
    DLN_ACT_LAYERS,
    LP,
    ORDERS,
    acts_stable,
    beta_same_order,
    bn_at_least_as_good,
    both_train,
    eta_gap,
    flatness,
    gap_at_least,
    high_lr,
    ics_gap_small_lr,
    ics_not_reduced,
    lp_order,
    moments,
    noise_alone_fails,
    noisy_beats_none,
    noisy_like_bn,
    norms_beat_none,
    wider_band,
)
from server.reproduction.verdicts import Claim, Figure

# -- what gets submitted ----------------------------------------------------------------------


_DLN_QUICK = {"steps": 300, "probes.landscape.every": 10, "probes.ics.every": 10,
              "probes.activations.every": 10}
_DLN_DATA = ("deep linear network, 25 layers of 10x10, n = 1000 Gaussian samples, "
             "full-batch GD at LR 1e-6")
# cpu: digits resized to 32x32 (worker/engine/data/digits.py) so VGG-11's five pools act as on
# CIFAR-10; at 8x8 two pools are skipped and the plain net stays at chance at LR 0.1, so Fig 1
# and 4 compared a trained net with a dead one. At 32x32 the same net (Glorot init, width 1/4,
# no other change) trains at LR 0.1 without BN (seed 0: 65 % test accuracy at step 200, 97 % at
# 300) and stays at chance at 0.5, so nothing else was changed. quick keeps 8x8: 32x32 costs
# ~12x the multiply-adds per step, past CI's budget; its plain net is the dead one, which its
# data text says.
_VGG_CPU = {"steps": 2000, "eval_every": 100, "dataset_options": {"size": 32}}
_VGG_CPU_DATA = ("VGG-11 at width 1/4 on scikit-learn digits resized to 32x32 (bilinear, from "
                 "8x8; 1,438 training images), SGD batch 128, 2,000 steps, probes every 20 "
                 "steps")
_VGG_QUICK_DATA = ("VGG-11 at width 1/4 on digits at 8x8 (not resized, to stay CI-cheap: two "
                   "pools are skipped and without BN the net stays at chance at LR 0.1), 600 "
                   "steps, probes every 20 steps")
_VGG_PAPER_DATA = "VGG-16 on CIFAR-10, SGD batch 128, 15,000 steps, probes every 100 steps"


def _dln(title: str, preset: str, key: str, vary: dict[str, list[Any]] | None = None,
         quick: dict[str, Any] | None = None) -> Experiment:
    vary = vary or {}
    return Experiment(key, title, {
        "quick": Plan(preset, quick or _DLN_QUICK, vary, seeds=SEEDS["quick"], analyses=()),
        "cpu": Plan(preset, {}, vary, seeds=SEEDS["cpu"], analyses=()),
        "paper": Plan(preset, {}, vary, seeds=SEEDS["paper"])},
                      {"quick": f"{_DLN_DATA}, 300 steps, probes every 10 steps",
                       "cpu": f"{_DLN_DATA}, 10,000 steps (the paper's), probes every 50",
                       "paper": f"{_DLN_DATA}, 10,000 steps (the paper's), probes every 50"})


EXPERIMENTS: tuple[Experiment, ...] = (
    _dln("Fig 3b ICS (DLN)", "paper-dln-ics", "dln-ics",
         quick={"steps": 300, "probes.ics.every": 10}),
    _dln("Fig 5b lp normalisation (DLN)", "paper-dln-lp", "dln-lp"),
    _dln("Fig 9, 10, 11 landscape and activations (DLN)", "paper-dln", "dln-landscape",
         {"norm": ["none", "batch", "noisy_batch"]}),
    Experiment(
        "vgg-lr", "Fig 1, 4 two learning rates (VGG)",
        {"quick": Plan("quick-vgg", {}, {"lr": [0.1, 0.5]}, seeds=SEEDS["quick"],
                       analyses=()),
         "cpu": Plan("quick-vgg", _VGG_CPU, {"lr": [0.1, 0.5]}, seeds=SEEDS["cpu"],
                     analyses=()),
         "paper": Plan("paper-vgg16", {}, {"lr": [0.1, 0.5]})},
        {"quick": _VGG_QUICK_DATA, "cpu": _VGG_CPU_DATA, "paper": _VGG_PAPER_DATA}),
    Experiment(
        "vgg-noisy", "Fig 2, 8 noisy BatchNorm (VGG)",
        {"quick": Plan("quick-vgg-noisy", {},
                       {"norm": ["none", "batch", "noisy_batch", "noise"]}, seeds=SEEDS["quick"],
                       analyses=()),
         "cpu": Plan("quick-vgg-noisy", _VGG_CPU,
                     {"norm": ["none", "batch", "noisy_batch", "noise"]}, seeds=SEEDS["cpu"],
                     analyses=()),
         "paper": Plan("paper-vgg16-noisy")},
        {"quick": _VGG_QUICK_DATA, "cpu": _VGG_CPU_DATA, "paper": _VGG_PAPER_DATA}),
    Experiment(
        "mlp-landscape", "Fig 4 stand-in on an MLP (mnist1d)",
        {s: Plan("quick-mlp", {"lr": 0.1}, seeds=SEEDS[s], analyses=())
         for s in ("quick", "cpu")},
        {s: "6-layer MLP, 128 units, on mnist1d (4,000 training samples), SGD batch 128 at "
            "the paper's LR 0.1, 800 steps, probes every 20 steps" for s in ("quick", "cpu")}),
)



# -- the catalogue ----------------------------------------------------------------------------

_VGG_LANDSCAPE = (
    Claim("4a", "the loss varies more along the gradient without BN", "qualitative (Fig 4a)",
          "peak over training of loss_max - loss_min over eta in S", wider_band(
              "landscape/loss_min", "landscape/loss_max", relative=False)),
    Claim("4b", "gradient predictiveness is worse without BN",
          "peaks 100-250 without BN; with BN mostly under 50",
          "peak over training of max_eta ||grad L(w - eta g) - g||; without BN at least 2x",
          gap_at_least("landscape/grad_dist_max", "gradient predictiveness", 2.0)),
    Claim("4c", "effective beta spikes higher without BN", "both near 20; without BN up to ~45",
          "peak over training of the effective beta", gap_at_least("landscape/beta", "beta", 1.0)),
    Claim("4c-typical", "typical effective beta is of the same order with and without BN",
          "both near 20", "median over training, within 10x of each other", beta_same_order),
)
_BOTH_TRAIN = Claim(
    "premise-both-train", "premise: both nets train at LR 0.1, as in the paper's Fig 1",
    "80 % without BN, 83 % with", "last test accuracy >= 50 % for both; when this fails the "
    "landscapes compare a trained net with one stuck at chance", both_train)
_VGG_CHOICES = (
    "Reduced scale: VGG-11 at width 1/4 on digits; at cpu scale resized to 32x32 so all five "
    "pools act as on CIFAR-10; at quick scale 8x8, where pools 4 and 5 are skipped once the "
    "map is 1x1 (docs/engine.md).",
    "S = {0.5, 1, 2, 4} x LR, probes every 20 steps on B_t in train mode.",
)

FIGURES: tuple[Figure, ...] = (
    Figure("3b", "ICS with and without BN", "DLN", "dln-ics", (
        Claim("3b-not-reduced", "BN does not reduce internal covariate shift",
              "BN's ||G - G'|| is larger, not smaller",
              "median over training of ||G - G'||_2 at layers 9 and 17, LR 1e-6 and 1e-7; "
              "BN >= none in every cell", ics_not_reduced),
        Claim("3b-lr1e-7", "at LR 1e-7 BN's ICS is orders of magnitude above the plain net's",
              "about 1e3 with BN vs 1-10 without", "the same medians at LR 1e-7; BN >= 100x",
              ics_gap_small_lr),
    ), plots=("ics",), choices=(
        "ICS per Definition 2.1: G' after every earlier layer (norm parameters included) took "
        "this step's update; the medians summarise the paper's curves.",)),
    Figure("5b", "Training loss with lp normalisation", "DLN", "dln-lp", (
        Claim("5b-norms-help", "every normalisation ends lower than no normalisation",
              "none about 1.7e3 is the highest", "median training loss over the last 10 % of "
              "steps; lower by more than 1 %", norms_beat_none),
        Claim("5b-order", "l1 < BN < linf < none (l2 close to BN)",
              "l1 ~1e2 < BN ~4.5e2 < linf ~9.5e2 < none ~1.7e3",
              "the same final losses, each step of the chain lower by more than 1 %",
              lp_order),
        Claim("5b-lp-smooth", "lp normalisations smooth the landscape like BN (section 3.3)",
              "qualitative (the paper shows it for VGG)", "peak effective beta within 100x of "
              "its median for BN, l1, l2, linf", flatness(LP)),
    ), plots=("training", "beta"), choices=(
        "lp: centre by the batch mean, divide by the power mean of the un-centred activations; "
        "no running statistics.",
        "Final loss: median over the last 10 % of steps (the paper reads the curve's end).",
        "Two final losses within 1 % are the same level, neither lower (stats.TIE): the one "
        "rule added after seeing results, once the DLN's losses showed plateaus (the deep "
        "linear net learns the target's singular directions one at a time) and a strict "
        "comparison counted a run sitting on the plain net's plateau as lower.")),
    Figure("10", "Loss landscape, gradient predictiveness, effective beta", "DLN",
           "dln-landscape", (
               Claim("10a", "the loss varies more along the gradient without BN",
                     "qualitative (Fig 10a)", "peak over training of loss_max / loss_min",
                     wider_band("landscape/loss_min", "landscape/loss_max", relative=True)),
               Claim("10b", "gradient predictiveness is orders of magnitude worse without BN",
                     "up to ~1e16 without BN; ~1e3-1e6 with BN",
                     "peak over training of max_eta ||grad L(w - eta g) - g||; none >= 100x BN",
                     gap_at_least("landscape/grad_dist_max", "gradient predictiveness", ORDERS)),
               Claim("10c", "effective beta is orders of magnitude larger without BN",
                     "peaks ~1e15 without BN; ~3e6 with BN",
                     "peak over training of the effective beta; none >= 100x BN",
                     gap_at_least("landscape/beta", "beta", ORDERS)),
               Claim("10c-flat", "with BN (and noisy BN) the effective beta stays flat",
                     "flat near 3e6 (noisy BN not in the paper's DLN)",
                     "peak within 100x of the median over training", flatness(
                         ("batch", "noisy_batch"))),
           ), plots=("landscape", "gradpred", "beta"), choices=(
               "S = {0.01, 0.1, 1, 10, 30} x LR, every 50 steps, on the full batch.",
               "Noisy BN added beyond the paper's DLN figure.")),
    Figure("11", "Gradient predictiveness at each step size", "DLN", "dln-landscape", (
        Claim("11-every-eta", "without BN gradients are less predictive at every step size",
              "qualitative (Fig 11: d(eta) against eta, by step)",
              "peak over training of d(eta) for each eta; none >= 100x BN at every eta",
              eta_gap),
    ), select={"norm": ["none", "batch"]}, plots=("etas",)),
    Figure("9", "Activation distributions of layers 1, 11, 24", "DLN", "dln-landscape", (
        Claim("9-stable", "with BN each layer's distribution keeps its scale over training; "
              "without BN it drifts", "qualitative (histograms)",
              "log10(max/min) over training of the sampled unit's variance, layers 1, 11, 24; "
              "BN < none at each", acts_stable),
    ), select={"norm": ["none", "batch"]}, plots=("dist_heat",), layers=DLN_ACT_LAYERS,
        choices=("Activations after the normalisation, before the next layer; one unit sampled "
                 "from the seed per layer.",)),
    Figure("1", "Training with and without BN at two learning rates", "VGG", "vgg-lr", (
        Claim("1-both-train", "at LR 0.1 both nets train", "test accuracy 83 % with BN, 80 % "
              "without", "last test accuracy >= 50 % for both", both_train),
        Claim("1-bn-better", "at LR 0.1 BN is at least as accurate", "83 % vs 80 %",
              "last test accuracy, BN >= none", bn_at_least_as_good),
        Claim("1-high-lr", "at LR 0.5 BN trains and the plain net stays at chance",
              "BN trains; without BN about 10 %",
              "last test accuracy: BN >= 50 %, none <= 20 % (or diverged)", high_lr),
    ), plots=("training",), choices=_VGG_CHOICES + (
        "High LR: the paper's 0.5, not searched for.",)),
    Figure("2", "Noisy BatchNorm trains like BatchNorm", "VGG", "vgg-noisy", (
        Claim("2-noisy-like-bn", "noisy BN trains like BN", "nearly identical training "
              "accuracy", "median training accuracy over the last 10 % of steps, within 5 "
              "points", noisy_like_bn),
        Claim("2-noisy-beats-none", "noisy BN trains at least as well as the standard net",
              "noisy BN and BN above standard", "the same final training accuracies",
              noisy_beats_none),
        Claim("2-noise-alone", "the same noise without BN does not train",
              "does not train", "final training accuracy <= 20 % (or diverged)",
              noise_alone_fails),
    ), plots=("training", "dist_heat"), layers=(3, 6), choices=_VGG_CHOICES + (
        "Noise (Algorithm 1) drawn at every step from its own generator, after BN's affine "
        "output; probes reuse the step's draw.",)),
    Figure("4", "Loss landscape, gradient predictiveness, beta at LR 0.1", "VGG", "vgg-lr",
           _VGG_LANDSCAPE, select={"lr": 0.1}, plots=("landscape", "gradpred", "beta"),
           choices=_VGG_CHOICES, premise=_BOTH_TRAIN),
    Figure("8", "Change of the activations' first two moments", "VGG", "vgg-noisy", (
        Claim("8-mean", "noisy BN moves the activations' mean more than BN and the standard "
              "net do", "qualitative", "mean over layers of the median |mu_(t+1) - mu_t| of "
              "the sampled unit", moments("mean")),
        Claim("8-var", "noisy BN moves the activations' variance more than BN and the standard "
              "net do", "qualitative", "the same with the variance", moments("var")),
    ), select={"norm": ["none", "batch", "noisy_batch"]}, plots=("dist_overlay",),
        layers=(3, 6), choices=_VGG_CHOICES + (
            "Moments of one sampled unit per layer, between consecutive probed steps.",)),
    Figure("4-mlp", "Fig 4 on an MLP where both nets train (beyond the paper)", "MLP",
           "mlp-landscape", _VGG_LANDSCAPE, plots=("landscape", "gradpred", "beta"),
           choices=("A stand-in for Fig 4: the quick-mlp preset (6 layers of 128, mnist1d) at "
                    "the paper's LR 0.1.",), beyond_paper=True, premise=_BOTH_TRAIN),
)

PAPER = Paper(
    key="santurkar2018", title="Santurkar et al. 2018", experiments=EXPERIMENTS,
    figures=FIGURES, metric_keys="train/*,test/*,landscape/*,ics/*,act/*",
    citation=("S. Santurkar, D. Tsipras, A. Ilyas, A. Madry, \"How Does Batch Normalization "
              "Help Optimization?\", NeurIPS 2018, arXiv:1805.11604"),
    summary=(
        "The paper argues that BatchNorm does not help by reducing internal covariate shift "
        "(ICS): a net with BN shows as much ICS as one without (Fig 3b), noise injected after "
        "BN to make the activations' distributions unstable does not hurt training (Fig 2, 8), "
        "and lp normalisations without any distributional control help as much (Fig 5b). "
        "What BN does instead is smooth the loss landscape: along the gradient the loss "
        "changes less, the gradient stays more predictive and the effective beta-smoothness "
        "is smaller (Fig 4 for VGG, Fig 10 and 11 for a deep linear network, DLN). We "
        "reproduce the figures with Landscope's own engine and probes under the protocol of "
        "paper-protocol.md: the DLN at the paper's size (for fewer steps at the quick "
        "scale), VGG at reduced scale on offline data (the paper's VGG-16 on CIFAR-10 wants "
        "a GPU and the archive), and Fig 4 once more on an MLP where both nets train (beyond "
        "the paper). No protocol was tuned to match a number; where ours differ from the "
        "paper's, the verdicts say so."),
)
