"""docs/geometry.md and its figures from the results of scripts/make_geometry_doc.py.

Every number on the page is computed here or in scripts/_geometry_stats.py from results.json;
nothing is typed. One section per experiment (a paired quick preset), each with its table,
its per-seed claims and its figures.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from _geometry_stats import CHANCE_FACTOR, GAP_FRACTION, RADIUS, at_chance, claims, pairs
from _geometry_text import CHOICES, RUN_NOTES, SETTINGS_API, SETTINGS_PRESET, intro, reproduce


def g4(v: float | None) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "n/a" if v is None else str(v)
    return f"{v:.4g}"


def pm(mean: float, se: float) -> str:
    return f"{mean:.4g} ± {se:.2g}"


def row(m: dict[str, Any]) -> str:
    """One line of an experiment's table (the test looks for it on the page)."""
    return (f"| {m['seed']} | {m['norm']} | {g4(m['loss'])} | {g4(m['test_acc'])} | "
            f"{g4(m['top'])} | {pm(m['trace'], m['trace_se'])} | {g4(m['edge'])} | "
            f"{m['outliers']} | {g4(m['share'])} | {g4(m['sharp'])} | {m['residual']:.1e} |")


def _table(head: str, lines: list[str]) -> str:
    return "\n".join([head, "| " + " | ".join(["---"] * (head.count("|") - 1)) + " |", *lines])


def table(exp: dict[str, Any]) -> str:
    head = ("| seed | norm | loss at θ_T | test acc | top eigenvalue | trace ± SE | bulk edge | "
            f"outliers | grad share top-k | ΔL(r={RADIUS}) | max Lanczos residual |")
    return _table(head, [row(m) for pair in pairs(exp) for m in pair])


def running_table(exp: dict[str, Any]) -> str:
    head = ("| seed | top eigenvalue, batch | top eigenvalue, running | trace ± SE, batch | "
            "trace ± SE, running | outliers batch / running | grad share batch / running |")
    return _table(head, [
        f"| {b['seed']} | {g4(b['top'])} | {g4(b['top_running'])} | "
        f"{pm(b['trace'], b['trace_se'])} | {pm(b['trace_running'], b['trace_running_se'])}"
        f" | {b['outliers']} / {b['outliers_running']} | {g4(b['share'])} / "
        f"{g4(b['share_running'])} |" for _, b in pairs(exp)])


def header(results: dict[str, Any], results_path: str) -> str:
    m, env = results["machine"], results["environment"]
    v = env["versions"]
    rows = [
        ("date", m["date"]),
        ("machine", f"{m['cpu']} (torch CPU capability {env['cpu_capability']}), "
                    f"{m['cpus_usable']} usable cores of {m['cpu_count']}, {m['ram_gib']} GiB, "
                    f"{env['os']}, no GPU used"),
        ("load", f"load average {m['load_before']} before, {m['load_after']} after (1, 5, 15 "
                 f"min); CPU pressure (share of the run's wall time some task waited for a "
                 f"core): {g4(m.get('cpu_pressure_share'))}"),
        ("threads", f"torch {env['torch_threads']} intra-op, {env['torch_interop_threads']} "
                    "inter-op"),
        ("determinism", f"device {env['device']}, default dtype {env['dtype']}, "
                        f"deterministic algorithms {env['deterministic_algorithms']}, "
                        f"MKL {env['mkl']}, oneDNN {env['mkldnn']}"),
        ("versions", ", ".join(f"{k} {val}" for k, val in v.items() if val)),
        ("code", f"git {m['git_head']}, engine sha256 {m['engine_code_sha256']}"),
        ("wall time", f"{results['seconds']:.0f} s for everything below ("
                      + ", ".join(f"{e['preset']} {e['seconds']:.0f} s"
                                  + (f", {e['cpu_seconds']:.0f} s of CPU time"
                                     if "cpu_seconds" in e else "")
                                  for e in results["experiments"]) + ")"),
        ("raw results", f"[`{results_path}`]({results_path.removeprefix('docs/')})"),
    ]
    return "\n".join(f"- **{k}**: {val}" for k, val in rows) + "\n"


def _hvps(s: dict[str, Any]) -> int:
    """Hessian-vector products of one spectrum: Lanczos, Hutchinson, SLQ."""
    return s["lanczos_steps"] + s["trace_probes"] + s["slq_steps"] * s["slq_vectors"]


def _settings(exp: dict[str, Any], override: int | None) -> str:
    from server.analysis_spec import AnalysisSpec

    if exp["analyses"] == "api":
        text = SETTINGS_API
    else:
        sp, api = exp["analysis_specs"]["spectrum"]["spectrum"], AnalysisSpec()
        n_train = _n_train(exp)
        api_n = n_train if api.eval_samples is None else min(api.eval_samples, n_train)
        api_hvps = _hvps(api.spectrum.model_dump())
        ratio = api_hvps * api_n / (_hvps(sp) * exp["eval_samples"])
        spectra = [c[k] for c in exp["cells"] for k in ("spectrum", "spectrum_running")
                   if k in c]
        cpu = sum(s.get("cpu_seconds", s["seconds"]) for s in spectra) / len(spectra)
        text = SETTINGS_PRESET.format(
            preset=exp["preset"], n=exp["eval_samples"], api_n=api_n, hvps=_hvps(sp),
            api_hvps=api_hvps, ratio=ratio, spectrum_cpu=cpu,
            extra=(ratio - 1) * cpu * len(spectra))
    if override is not None:
        text += (f" For this run the evaluation set was overridden to {override} samples "
                 "(`--eval-samples`).")
    return text


def _n_train(exp: dict[str, Any]) -> int:
    from server.settings import get_settings
    from server.spec import RunSpec
    from worker.engine.data import load_dataset

    spec = RunSpec.model_validate(exp["cells"][0]["run_spec"])
    return len(load_dataset(spec, get_settings().data_dir).y_train)


def section(exp: dict[str, Any], rel: dict[str, str], override: int | None) -> str:
    ps = pairs(exp)
    sp = exp["analysis_specs"]["spectrum"]["spectrum"]
    cell0 = exp["cells"][0]
    rs = cell0["run_spec"]
    model = (f"VGG-{rs['vgg_config']} at width {rs['width']:g}" if rs["model"] == "vgg"
             else f"{rs['depth']}-layer {rs['model'].upper()} of width {rs['width']:g}")
    name = exp["preset"]
    notes = RUN_NOTES.format(
        model=model, dataset=rs["dataset"], optimizer=rs["optimizer"].upper(), lr=rs["lr"],
        steps=rs["steps"], snap=exp["snapshot_every"], eval_samples=exp["eval_samples"],
        batch=cell0["spectrum"]["values"]["meta"]["batch_size"],
        settings=_settings(exp, override), top_k=sp["top_k"], lanczos=sp["lanczos_steps"],
        probes=sp["trace_probes"], slq_steps=sp["slq_steps"], slq_vectors=sp["slq_vectors"],
        broadening=sp["broadening"], nx=len(cell0["surface"]["grid"]["x"]),
        tnx=len(cell0["trajectory"]["grid"]["x"]),
        n_none=f"{ps[0][0]['parameters']:,}", n_bn=f"{ps[0][1]['parameters']:,}",
        dtype=exp["dtype"],
        data=exp["data_sha256"][:16])
    claim_lines = "\n".join(f"- {text}: **holds in {k} of {n}**" for text, k, n in claims(exp))
    seed = ps[0][0]["seed"]
    return "\n".join([
        f"## Measured: {name} with and without BatchNorm\n",
        notes,
        f"All values at the last step, BN mode `batch`, on the evaluation set (top-k: k = "
        f"{sp['top_k']}).\n",
        table(exp) + "\n",
        "### Claims, seed by seed\n",
        claim_lines + "\n",
        _ratios(ps) + " " + _chance(exp) + "\n",
        "### The BN net's spectrum in `running` mode\n",
        "The same network, the same evaluation set and the same probe seeds; only the BN "
        "mode differs (eval mode with the snapshot's running statistics, what PyHessian and "
        "loss-landscape do).\n",
        running_table(exp) + "\n",
        "### Figures\n",
        f"![{name} surfaces]({rel['surfaces']})\n",
        f"*{name}: loss surfaces at the last step (seed {seed}), log10 of the loss, one colour "
        "scale for both, BN mode batch; directions: random, filter-normalised, shared seed.*\n",
        f"![{name} slices]({rel['slices']})\n",
        f"*{name}: the surfaces' cross-section along d1 (β = 0), every seed.*\n",
        f"![{name} spectra]({rel['spectra']})\n",
        f"*{name}: SLQ eigenvalue densities (log scale) with the top-{sp['top_k']} Lanczos "
        "eigenvalues as ticks and the bulk edge as a dotted line; left on one eigenvalue axis, "
        "right each against its own top eigenvalue (so spectra of different scales compare).*\n",
        f"![{name} trajectory]({rel['trajectory']})\n",
        f"*{name}: the optimiser's path on the PCA plane of θ_i − θ_T (BN mode batch), with "
        "each axis's explained variance.*\n",
    ])


def render(results: dict[str, Any], doc: Path, figures: Path, results_path: Path) -> None:
    from _geometry_figures import draw_all

    figures.mkdir(parents=True, exist_ok=True)
    try:
        shown_path = str(results_path.resolve().relative_to(doc.resolve().parents[1]))
    except ValueError:
        shown_path = f"docs/{figures.name}/{results_path.name}"
    sections = []
    for exp in results["experiments"]:
        pngs = draw_all(exp, figures)
        rel = {k: f"{figures.name}/{p.name}" for k, p in pngs.items()}
        sections.append(section(exp, rel, results["options"]["eval_samples"]))
    parts = [intro(results), header(results, shown_path),
             CHOICES.format(**_choice_values(results)), _definitions(results),
             *sections, reproduce(results, Path(shown_path).parent.name)]
    doc.write_text("\n".join(parts).rstrip() + "\n", encoding="utf-8")


def _definitions(results: dict[str, Any]) -> str:
    from _geometry_text import DEFINITIONS

    return DEFINITIONS.format(gap=GAP_FRACTION, radius=RADIUS)


def _chance(exp: dict[str, Any]) -> str:
    classes = exp.get("classes")
    if not classes:
        return ""
    ch = at_chance(exp)
    (k_none, n), (k_bn, _) = ch["none"], ch["batch"]
    text = (f"Chance is 1/{classes} = {1 / classes:.3g}; nets ending at chance (test accuracy "
            f"≤ {CHANCE_FACTOR:g} / {classes}): no norm {k_none} of {n}, BatchNorm {k_bn} of {n}.")
    if k_none:
        text += (" A net at chance has not left its initial plateau: its small curvature is "
                 "that of an untrained net, not of a flat minimum, so for those seeds the "
                 "curvature claims compare an untrained net with a trained one.")
    return text


def _ratios(ps: list[tuple[dict[str, Any], dict[str, Any]]]) -> str:
    def per_seed(key: str) -> str:
        return ", ".join(f"{n[key] / b[key]:.3g}" if b[key] else "n/a" for n, b in ps)

    return ("Ratios no norm / BatchNorm, seed by seed: top eigenvalue "
            f"{per_seed('top')}; trace {per_seed('trace')}; gradient share "
            f"{per_seed('share')}; ΔL(r={RADIUS}) {per_seed('sharp')}.")


def shared_directions(exp: dict[str, Any]) -> dict[str, Any]:
    """Which parameter tensors an experiment's paired networks share by name, and whether their
    raw random directions (direction seed, label d1) are identical: checked, not assumed."""
    import torch

    from server.settings import get_settings
    from server.spec import RunSpec
    from worker.engine.data import load_dataset
    from worker.engine.geometry.directions import raw_direction
    from worker.engine.models import build_model

    dirs = {}
    for c in exp["cells"]:
        if c["seed"] != exp["seeds"][0]:
            continue
        spec = RunSpec.model_validate(c["run_spec"])
        data = load_dataset(spec, get_settings().data_dir)
        net = build_model(spec, data.in_shape, data.n_outputs, torch.Generator())
        dirs[c["norm"]] = raw_direction(dict(net.named_parameters()), exp["direction_seed"],
                                        "d1")
    plain, bn = dirs["none"], dirs["batch"]
    shared = [k for k in plain if k in bn]
    return {"plain": len(plain), "bn": len(bn), "shared": len(shared),
            "identical": all(torch.equal(plain[k], bn[k]) for k in shared)}


def _choice_values(results: dict[str, Any]) -> dict[str, Any]:
    from server.analysis_spec import AnalysisSpec, Spectrum
    from worker.engine.geometry.job_prepare import TRAJECTORY_MARGIN

    d, s = AnalysisSpec(), Spectrum()
    said = []
    for exp in results["experiments"]:
        sd = shared_directions(exp)
        same = "identical" if sd["identical"] else "NOT identical"
        said.append(f"{exp['preset']}: {sd['shared']} of the BN net's {sd['bn']} parameter "
                    f"tensors and {sd['shared']} of the plain net's {sd['plain']}, raw "
                    f"directions checked {same}")
    return {"shared": "here " + "; ".join(said),
            "eval_default": d.eval_samples, "slq_steps": s.slq_steps,
            "slq_vectors": s.slq_vectors, "broadening": s.broadening, "top_k": s.top_k,
            "lanczos": s.lanczos_steps, "probes": s.trace_probes,
            "recal": d.recalibration_samples, "chunk": d.chunk_points,
            "margin": 1 / TRAJECTORY_MARGIN}
