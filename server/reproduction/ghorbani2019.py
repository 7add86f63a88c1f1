"""Ghorbani, Krishnan and Xiao 2019, "An Investigation into Neural Net Optimization via Hessian
Eigenvalue Density" (ICML 2019): the Hessian's outlier eigenvalues and the gradient's
concentration in their eigenspace, with and without BatchNorm.

The paper's claims reproduced here are those of its abstract and Section 4: "in non-batch
normalized networks, we observe the rapid appearance of large isolated eigenvalues in the
spectrum, along with a surprising concentration of the gradient in the corresponding
eigenspaces. In batch normalized networks, these two effects are almost absent." The paper
shows them on ResNet-32 on CIFAR-10 (and Inception-v3 on ImageNet); we measure a 6-layer MLP on
mnist1d, where both nets train on two CPU cores in seconds. Figure ids G1, G2 are ours (the
paper's figures are cited by what they show).

Every number comes from the runs' spectrum analyses (server/analysis_spec.py kind "spectrum",
worker/engine/geometry/hessian.py), in BN mode "batch" (train-mode batch statistics on
training-size batches: the Hessian of the loss the optimiser descends; the paper ties the
outliers' absence to BN's mini-batch statistics), at an early step (5 % into training:
"rapid appearance") and at the last:

- the outlier ratio R = lambda_1 / max(lambda_{C+1}, -lambda_min) (`outliers`): the top
  eigenvalue over the bulk's extent. Sagun et al. 2017 and Papyan 2018 find about one outlier
  per class, C of them, so the (C+1)-th eigenvalue is the top of the bulk; the bulk
  also reaches down to lambda_min, and the larger magnitude of its two ends is its extent (its
  centre sits near 0). lambda_1 .. lambda_{C+1} come from Lanczos (top_k = C + 1),
  lambda_min from the lowest node of the SLQ density's quadrature. Ritz values lie inside the
  spectrum, so both ends of the bulk are inner estimates and, lambda_1 converging first, R is
  if anything an upper bound (the residuals say by how little: quick plan comment);
- the gradient share ||P g||^2 / ||g||^2 in the span of the top C + 1 Ritz vectors, as the
  spectrum analysis reports it (`gradient_share`; the paper's projection on the outliers'
  eigenspace, with the bulk's top direction added).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from server.reproduction.plans import SEEDS, Experiment, Paper, Plan
from server.reproduction.runs import MissingData, RunData, pick
from server.reproduction.santurkar_checks import TRAINS_ACC, final_acc
from server.reproduction.stats import fmt
from server.reproduction.verdicts import Claim, Figure, Outcome

# Thresholds, from the paper's wording (it gives no number for either), fixed before any run.
# "Large isolated eigenvalues" / "outliers": lambda_1 at least twice the bulk's extent, i.e.
# separated from the bulk's edge by a gap at least as wide as the bulk's own positive side; the
# top of a bulk that merely thins out (lambda_1 just past lambda_{C+1}) reads well under 2.
ISOLATED = 2.0
# "A surprising concentration of the gradient" in the outliers' eigenspace: most of its
# energy there, more than half of ||g||^2.
MOST = 0.5
BN_MODE = "batch"  # the spectrum the checks read: train-mode BN, the loss SGD descends

# Classes of the datasets these plans use (the outliers' expected count).
CLASSES = {"mnist1d": 10, "digits": 10, "cifar10": 10}


# -- what gets submitted ----------------------------------------------------------------------

_MLP_STEPS = 800  # the quick-mlp preset's
EARLY = _MLP_STEPS // 20  # 5 % into training: "the rapid appearance" of the outliers
_TOP_K = CLASSES["mnist1d"] + 1
# Probes measure nothing these claims read and cost most of a run's time: off. The analysed
# steps before the last are saved as snapshots (step 0 and the last step always are).
_PROBES_OFF = {f"probes.{p}.every": 0 for p in ("landscape", "ics", "activations", "sharpness")}


def spectrum_analyses(early: Sequence[int], eval_samples: int,
                      **spectrum: int) -> tuple[dict[str, Any], ...]:
    """The spectrum analyses (AnalysisSpec JSON) a plan asks for on each of its runs: at the
    `early` steps, and at the last step (steps null: whatever the run's length, so that a
    smoke run with fewer steps, `--set steps=200`, still analyses its end)."""
    one = {"kind": "spectrum", "bn_mode": BN_MODE, "eval_samples": eval_samples,
           "spectrum": {"top_k": _TOP_K, **spectrum}}
    return ({**one, "steps": list(early)}, {**one, "steps": None})


# quick: 512 evaluation samples (4 batches of the training size, as the quick presets'
# analyses), 40 Lanczos steps for the top 11 (the 11th pair's residual was 1e-5 to 0.12 of
# eigenvalues near 2 to 4 in the first measurement), 10 Hutchinson probes (the trace is
# reported, not judged) and a 40-step x 2-vector density: about 140 HVPs per step. On a
# shared 2-core machine (load 9) an MLP run trained in 20-75 s and its two spectra took
# 25-85 s.
_QUICK_SPECTRA = spectrum_analyses([EARLY], 512, lanczos_steps=40, trace_probes=10,
                                   slq_steps=40, slq_vectors=2)
# cpu: the API's default evaluation set (2,048 samples), 60 Lanczos steps, an 80-step x
# 2-vector density, 20 probes, and a third step mid-training: about 250 HVPs per step on 4x the
# samples. Measured on the shared 2-core machine at a load of 15-19 (several jobs): 630-770 s
# of analyses per run against about 120 s for the quick plan's, so some 6x; on two idle cores
# the 6 runs should stay well inside the cpu scale's 30 minutes.
_CPU_EARLY = [EARLY, _MLP_STEPS // 2]
_CPU_SPECTRA = spectrum_analyses(_CPU_EARLY, 2048, lanczos_steps=60, trace_probes=20,
                                 slq_steps=80, slq_vectors=2)
_MLP_DATA = ("6-layer MLP, 128 units, on mnist1d (4,000 training samples), SGD batch 128 at "
             "LR 0.5, 800 steps, with and without BN; Hessian spectra (BN mode batch) at steps")

EXPERIMENTS: tuple[Experiment, ...] = (
    Experiment(
        "ghorbani-spectra", "Fig G1, G2 Hessian outliers and the gradient (MLP)",
        {"quick": Plan("quick-mlp", {**_PROBES_OFF, "snapshots.steps": [EARLY]},
                       seeds=SEEDS["quick"], analyses=_QUICK_SPECTRA),
         "cpu": Plan("quick-mlp", {**_PROBES_OFF, "snapshots.steps": _CPU_EARLY},
                     seeds=SEEDS["cpu"], analyses=_CPU_SPECTRA)},
        {"quick": f"{_MLP_DATA} {EARLY} and 800 on 512 evaluation samples, 40 Lanczos steps "
                  "for the top 11",
         "cpu": f"{_MLP_DATA} {EARLY}, 400 and 800 on 2,048 evaluation samples, 60 Lanczos "
                "steps for the top 11, an 80-step x 2-vector density"}),
)


# -- the statistics ---------------------------------------------------------------------------


def _num(v: Any) -> float:
    """A number of the analysis JSON: null and the strings "nan", "inf" as floats."""
    return math.nan if v is None else float(v)


def spectra(run: RunData) -> dict[int, dict[str, Any]]:
    """The run's spectrum values (values["spectrum"]) by analysed step, from all its spectrum
    analyses in BN mode BN_MODE (a plan asks for the early steps and the last in two; where
    two analysed the same step, the newer)."""
    out: dict[int, dict[str, Any]] = {}
    for a in run.analyses:
        if a.kind == "spectrum" and a.bn_mode == BN_MODE:
            out |= {t: st["values"]["spectrum"] for t, st in a.steps.items()
                    if isinstance((st.get("values") or {}).get("spectrum"), Mapping)}
    if not out:
        raise MissingData(f"{run.label()} has no spectrum analysis (BN mode {BN_MODE})")
    return dict(sorted(out.items()))


@dataclass(frozen=True)
class Outliers:
    top: float  # lambda_1
    edge: float  # lambda_{C+1}: the top of the bulk
    lowest: float  # lambda_min: the bottom of the bulk
    ratio: float  # top / max(edge, -lowest)

    @property
    def bulk(self) -> float:
        return max(self.edge, -self.lowest)


def outliers(top_eigenvalues: Sequence[Any], lowest: float, classes: int) -> Outliers:
    """The outlier ratio of a spectrum: lambda_1 over the bulk's extent max(lambda_{C+1},
    -lambda_min) (module doc). A bulk of zero extent (a zero Hessian) gives inf for a
    positive lambda_1 and NaN otherwise; NaN anywhere stays NaN (and never passes a check)."""
    vals = [_num(v) for v in top_eigenvalues]
    if len(vals) < classes + 1:
        raise MissingData(f"{len(vals)} top eigenvalues; the bulk's edge needs {classes + 1}")
    top, edge = vals[0], vals[classes]
    bulk = max(edge, -lowest)
    if any(math.isnan(x) for x in (top, edge, lowest)):
        r = math.nan
    elif bulk > 0:
        r = top / bulk
    else:
        r = math.inf if top > 0 else math.nan
    return Outliers(top, edge, lowest, r)


def lowest_node(spectrum: Mapping[str, Any]) -> float:
    """The lowest node of the SLQ quadrature over its start vectors: lambda_min's estimate
    (the extreme Ritz values converge first)."""
    nodes = [_num(x) for vec in (spectrum.get("slq") or {}).get("nodes", []) for x in vec]
    if not nodes:
        raise MissingData("the spectrum has no SLQ nodes")
    return math.nan if any(math.isnan(x) for x in nodes) else min(nodes)


def classes_of(run: RunData) -> int:
    try:
        return CLASSES[run.spec.get("dataset")]
    except KeyError:
        raise MissingData(f"classes of dataset {run.spec.get('dataset')!r} unknown") from None


def outliers_by_step(run: RunData) -> dict[int, Outliers]:
    c = classes_of(run)
    return {t: outliers(s.get("top_eigenvalues", []), lowest_node(s), c)
            for t, s in spectra(run).items()}


def shares_by_step(run: RunData) -> dict[int, float]:
    """The gradient's share ||P g||^2 / ||g||^2 in the top-k Ritz subspace at each step."""
    out = {}
    for t, s in spectra(run).items():
        if s.get("gradient_share") is None:
            raise MissingData(f"{run.label()} has no gradient share at step {t}")
        out[t] = _num(s["gradient_share"])
    return out


# -- the checks, one per claim ----------------------------------------------------------------


def _outlier_check(norm: str, passes: Callable[[float], bool]
                   ) -> Callable[[list[RunData]], Outcome]:
    """`passes(R)` for the `norm` run's outlier ratio at every analysed step."""

    def test(runs: list[RunData]) -> Outcome:
        by_step = outliers_by_step(pick(runs, norm=norm))
        ok = all(passes(o.ratio) for o in by_step.values())
        values = {}
        for t, o in by_step.items():
            values |= {f"{norm}/step{t}/ratio": o.ratio, f"{norm}/step{t}/lambda1": o.top,
                       f"{norm}/step{t}/bulk": o.bulk}
        return Outcome(ok, f"{_where(norm)}: " + "; ".join(
            f"step {t}: lambda_1 {fmt(o.top)}, bulk {fmt(o.bulk)} (lambda_11 {fmt(o.edge)}, "
            f"lambda_min {fmt(o.lowest)}), R = {fmt(o.ratio)}" for t, o in by_step.items()),
            values)

    return test


def _share_check(norm: str, passes: Callable[[float], bool]
                 ) -> Callable[[list[RunData]], Outcome]:
    """`passes(share)` for the `norm` run's gradient share at every analysed step."""

    def test(runs: list[RunData]) -> Outcome:
        by_step = shares_by_step(pick(runs, norm=norm))
        ok = all(passes(v) for v in by_step.values())
        return Outcome(ok, f"gradient share {_where(norm)}: " + ", ".join(
            f"step {t} {fmt(v)}" for t, v in by_step.items()),
            {f"{norm}/step{t}": v for t, v in by_step.items()})

    return test


def _where(norm: str) -> str:
    return "without BN" if norm == "none" else "with BN"


def _ratios(run: RunData) -> dict[int, float]:
    return {t: o.ratio for t, o in outliers_by_step(run).items()}


def _below_none(stat: Callable[[RunData], Mapping[int, float]], what: str
                ) -> Callable[[list[RunData]], Outcome]:
    """BN's statistic below the plain net's at every step both runs analysed."""

    def test(runs: list[RunData]) -> Outcome:
        none, bn = stat(pick(runs, norm="none")), stat(pick(runs, norm="batch"))
        steps = sorted(set(none) & set(bn))
        if not steps:
            raise MissingData("no step analysed in both runs")
        ok = all(bn[t] < none[t] for t in steps)
        values = {f"{n}/step{t}": d[t] for t in steps for n, d in (("none", none),
                                                                   ("batch", bn))}
        return Outcome(ok, f"{what}: " + "; ".join(
            f"step {t}: {fmt(bn[t])} with BN, {fmt(none[t])} without" for t in steps), values)

    return test


def _both_train(runs: list[RunData]) -> Outcome:
    none, bn = (final_acc(pick(runs, norm=n)) for n in ("none", "batch"))
    return Outcome(none >= TRAINS_ACC and bn >= TRAINS_ACC,
                   f"test accuracy: {none:.1%} without BN, {bn:.1%} with BN",
                   {"none": none, "batch": bn})


_RATIO = "lambda_1 / max(lambda_11, -lambda_min)"
_SHARE = "||P_11 g||^2 / ||g||^2"

_BOTH_TRAIN = Claim(
    "G-both-train", "premise: both nets train (the paper compares networks that do)",
    "ResNet-32 on CIFAR-10 trains with and without BN", "last test accuracy >= 50 % for both",
    _both_train)

_CHOICES = (
    "The quick-mlp preset (6 layers of 128, mnist1d, LR 0.5) with probes off, in place of "
    "the paper's ResNet-32 on CIFAR-10: both nets train in seconds on a CPU.",
    f"Spectra in BN mode batch (training-size batches with their own statistics) at step "
    f"{EARLY} (5 % into training) and at the end.",
    "Outlier count C = 10 (one per class, as Sagun et al. 2017 and Papyan 2018 find): the "
    "bulk's top is lambda_11, from the same Lanczos run as lambda_1; lambda_min is the lowest "
    "SLQ node.",
    f"Thresholds from the paper's wording: isolated = at least {ISOLATED:g}x the bulk's "
    f"extent; concentrated = more than {MOST:.0%} of ||g||^2.",
)

FIGURES: tuple[Figure, ...] = (
    Figure("G1", "Outlier eigenvalues without BN, almost absent with it", "MLP",
           "ghorbani-spectra", (
               Claim("G1-outliers", "without BN large isolated eigenvalues appear early and "
                     "stay", "qualitative (Section 4: 'the rapid appearance of large isolated "
                     "eigenvalues in the spectrum')",
                     f"{_RATIO} at every analysed step >= {ISOLATED:g}",
                     _outlier_check("none", lambda r: r >= ISOLATED)),
               Claim("G1-bn-absent", "with BN the outliers are almost absent",
                     "qualitative ('almost absent' in batch normalized networks)",
                     f"{_RATIO} at every analysed step < {ISOLATED:g}",
                     _outlier_check("batch", lambda r: r < ISOLATED)),
               Claim("G1-bn-less", "BN's spectrum is less spiky than the plain net's",
                     "qualitative (the BN spectra's outliers far smaller)",
                     f"{_RATIO}, with BN below without, at every step",
                     _below_none(_ratios, f"outlier ratio {_RATIO}")),
           ), plots=("training",), choices=_CHOICES, premise=_BOTH_TRAIN),
    Figure("G2", "The gradient's concentration in the outliers' eigenspace", "MLP",
           "ghorbani-spectra", (
               Claim("G2-concentrated", "without BN most of the gradient lies in the top "
                     "eigenspace", "qualitative (Section 4: 'a surprising concentration of "
                     "the gradient in the corresponding eigenspaces')",
                     f"{_SHARE} at every analysed step >= {MOST:g}",
                     _share_check("none", lambda s: s >= MOST)),
               Claim("G2-bn-absent", "with BN the gradient does not concentrate there",
                     "qualitative ('almost absent' in batch normalized networks)",
                     f"{_SHARE} at every analysed step < {MOST:g}",
                     _share_check("batch", lambda s: s < MOST)),
               Claim("G2-bn-less", "with BN less of the gradient lies there",
                     "qualitative", f"{_SHARE}, with BN below without, at every step",
                     _below_none(shares_by_step, f"gradient share {_SHARE}")),
           ), plots=("training",), choices=_CHOICES + (
               "Top-11 subspace: the C = 10 outliers' plus the bulk's top direction (the "
               "spectrum analysis reports the share in its top-k).",),
           premise=_BOTH_TRAIN),
)

PAPER = Paper(
    key="ghorbani2019", title="Ghorbani et al. 2019", experiments=EXPERIMENTS,
    figures=FIGURES, metric_keys="train/*,test/*",
    summary="The Hessian's eigenvalue density, estimated at scale with stochastic Lanczos "
    "quadrature, shows that without BatchNorm large isolated eigenvalues (outliers, about one "
    "per class) separate from the bulk early in training and the gradient concentrates in "
    "their subspace; with BatchNorm the outliers are nearly absent and the "
    "gradient is spread out, which the paper links to BatchNorm's speed-up of optimisation.",
    citation="Behrooz Ghorbani, Shankar Krishnan, Ying Xiao. An Investigation into Neural Net "
    "Optimization via Hessian Eigenvalue Density. ICML 2019, arXiv 1901.10159.",
)
