"""A run's environment (RunOut.environment: what its numbers depend on besides spec and seed)
as a small collapsed block under the run's chip: one summary line, and every field on
opening it. Pure: a dict in, Dash components out."""

from __future__ import annotations

from typing import Any

from dash import html


def summary(env: dict[str, Any]) -> str:
    """'1 thread · float64 · AMD EPYC (AVX512) · torch 2.13.0+cpu', leaving out what is
    not known; 'deterministic' after the precision when the run asked for it (early: the
    chip cuts the line short)."""
    threads = env.get("torch_threads")
    parts = [
        None if threads is None else f"{threads} thread{'' if threads == 1 else 's'}",
        env.get("dtype"),
        "deterministic" if env.get("deterministic") else None,
        _device(env),
        _version("torch", env),
    ]
    return " · ".join(p for p in parts if p)


def _device(env: dict[str, Any]) -> str | None:
    name = env.get("device_name") or env.get("device")
    isa = env.get("isa")
    if str(env.get("device", "cpu")).startswith("cpu") and isa:
        return f"{name} ({isa})" if name else isa
    return name


def _version(lib: str, env: dict[str, Any]) -> str | None:
    v = (env.get("versions") or {}).get(lib)
    return f"{lib} {v}" if v else None


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, dict):
        return ", ".join(f"{k} {_text(v)}" for k, v in value.items() if v is not None)
    return str(value)


ROWS = (  # label, key: the order fields are listed in
    ("torch threads", "torch_threads"), ("inter-op threads", "interop_threads"),
    ("deterministic algorithms", "deterministic"), ("cuDNN", "cudnn"),
    ("TF32 matmul", "matmul_tf32"), ("float32 matmul precision", "float32_matmul_precision"),
    ("precision", "dtype"), ("device", "device"), ("device name", "device_name"),
    ("CPU", "cpu"), ("instruction set", "isa"), ("oneMKL branch", "mkl_cbwr"), ("CUDA", "cuda"),
    ("OS", "os"),
    ("versions", "versions"),
)


def environment_block(run: dict[str, Any]) -> html.Details | None:
    """The block for a run's chip; None for a run with no environment recorded (queued, or
    trained before it was recorded)."""
    env = run.get("environment")
    if not isinstance(env, dict) or not env:
        return None
    rows = [html.Tr([html.Th(label), html.Td(_text(env[key]))])
            for label, key in ROWS if env.get(key) is not None]
    return html.Details([
        html.Summary(["environment: ", html.Span(summary(env), className="muted")],
                     title=f"{summary(env)}: what this run's numbers depend on besides its "
                     "spec and seed"),
        html.Table(html.Tbody(rows), className="env-table"),
    ], className="env-details")


def environments_line(runs: list[dict[str, Any]]) -> html.P | None:
    """What a set of runs (a reproduction figure's) trained under: one summary when they
    agree, each distinct one with its run count when they do not (their numbers are then
    not comparable bit for bit). None when no run has recorded one yet."""
    return _counted_line([[run.get("environment")] for run in runs], "run", "Environment: ",
                         "Environments differ: ",
                         "threads, precision, device and instruction set, torch version: "
                         "what these runs' numbers depend on besides spec and seed")


def analyses_environment_line(details: list[dict[str, Any]]) -> html.P | None:
    """What the analyses of one request were computed in (AnalysisStep.environments: the
    preparing worker's and every chunk's, at every step), counted by analysis; None when
    none recorded one (stored before they were)."""
    per = [[e for st in (d.get("steps") or {}).values() for e in st.get("environments") or []]
           for d in details]
    return _counted_line(per, "analysis", "Computed in: ", "Computed in several environments: ",
                         "threads, determinism, precision, device, torch version: what these "
                         "analyses' numbers depend on besides their spec")


def _counted_line(groups: list[list[Any]], noun: str, one: str, several: str,
                  tip: str) -> html.P | None:
    """Each distinct summary of the environments in `groups` (one group per run or
    analysis) with how many groups had it."""
    counts: dict[str, int] = {}
    for envs in groups:
        texts = {summary(e) or "recorded" for e in envs if isinstance(e, dict) and e}
        for text in sorted(texts):
            counts[text] = counts.get(text, 0) + 1
    if not counts:
        return None
    plural = {"run": "runs", "analysis": "analyses"}[noun]
    body = "; ".join(f"{t} ({n} {noun if n == 1 else plural})" for t, n in counts.items())
    return html.P([html.Strong(one if len(counts) == 1 else several), body],
                  className="section-text env-line", title=tip)
