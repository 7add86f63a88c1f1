"""docs/reproduction.md from results.json (scripts/_repro_collect.py).

Every number on the page comes from results.json, formatted by `fmt` (server/reproduction's
3 significant digits); the prose that carries no number of ours is in scripts/_repro_text.py
or the paper modules (Paper.summary, Figure.choices, the claims' texts).
"""

from __future__ import annotations

import re
from typing import Any

from _repro_dtype import DTYPES, ULPS, largest_change
from _repro_text import HOW_TO_RUN, RULES, dtype_intro

from server.reproduction.stats import fmt

VERDICTS = ("reproduced", "partly", "not reproduced", "no data")


def f(x: float | str) -> str:
    return fmt(float(x))


def cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def anchor(fig: dict[str, Any]) -> str:
    return slug(heading(fig))


def slug(head: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^a-z0-9 _-]", "", head.lower()).replace(" ", "-")


def heading(fig: dict[str, Any]) -> str:
    return f"Fig {fig['id']} ({fig['model']}): {fig['title']}"


def seeds_text(seeds: list[Any]) -> str:
    return ", ".join(str(s) for s in seeds) if seeds else "none"


def numbers(claim: dict[str, Any]) -> str:
    """Each number of a claim: its median and range over the seeds that decide it (one seed:
    the value)."""
    if claim["spread"]:
        return "; ".join(f"{k} {f(m)} ({f(lo)} to {f(hi)})" if n > 1 else f"{k} {f(m)}"
                         for k, (m, lo, hi, n) in claim["spread"].items())
    return "; ".join(f"{k} {f(v)}" for k, v in claim["values"].items())


def holds(claim: dict[str, Any]) -> str:
    """"holds in k of n seeds" (the k-of-n rule's outcome: holds, fails, mixed, no data)."""
    if claim["n"] == 0:
        return "no data"
    text = f"holds in {claim['k']} of {claim['n']} seed{'s' * (claim['n'] != 1)}"
    missing = len(claim["seeds"]) - claim["n"]
    return text + (f", {missing} not decided" if missing else "")


def claim_rows(fig: dict[str, Any]) -> list[str]:
    rows = ["| claim | paper | ours: median (range) over seeds | holds |",
            "| --- | --- | --- | --- |"]
    for c in fig["claims"]:
        rows.append(f"| {cell(c['text'])} | {cell(c['paper'])} | {cell(numbers(c))} | "
                    f"**{holds(c)}** |")
    return rows


def per_seed(fig: dict[str, Any]) -> list[str]:
    out = ["<details><summary>each seed, in words</summary>", ""]
    for c in fig["claims"]:
        out.append(f"- {cell(c['text'])} (statistic: {c['statistic']})")
        for s in c["seeds"]:
            mark = {True: "holds", False: "fails", None: "not decided"}[s["ok"]]
            out.append(f"  - seed {s['seed']}: {mark}: {s['ours']}")
    return [*out, "", "</details>"]


def figure_section(fig: dict[str, Any], scale: str, png_dir: str) -> list[str]:
    out = [f"### {heading(fig)}", ""]
    if fig["png"]:
        out += [f"![Fig {fig['id']}]({png_dir}/{fig['png']})", ""]
    out.append(f"**{fig['verdict'].capitalize()}.** Run: {fig['data']} (scale `{scale}`, "
               f"experiment `{fig['experiment']}`, {fig['runs']} runs, seeds "
               f"{seeds_text(fig['seeds'])}).")
    if fig["beyond_paper"]:
        out.append("Beyond the paper.")
    out += ["", *claim_rows(fig), ""]
    if fig["choices"]:
        out += ["Protocol choices where the paper is silent:", ""]
        out += [f"- {c}" for c in fig["choices"]] + [""]
    return out + per_seed(fig) + [""]


def summary_table(paper: dict[str, Any]) -> list[str]:
    rows = ["| figure | model | claims holding | verdict |", "| --- | --- | --- | --- |"]
    for fig in paper["figures"]:
        claims = [c for c in fig["claims"] if not c["premise"]]
        held = sum(c["status"] == "holds" for c in claims)
        premise = [c for c in fig["claims"] if c["premise"]]
        note = f"; premise {premise[0]['status']}" if premise else ""
        rows.append(f"| [{fig['id']}](#{anchor(fig)}) {cell(fig['title'])} | {fig['model']} | "
                    f"{held} of {len(claims)}{note} | {fig['verdict']} |")
    counts = {v: sum(fig["verdict"] == v for fig in paper["figures"]) for v in VERDICTS}
    total = ", ".join(f"{n} {v}" for v, n in counts.items() if n)
    return [*rows, "", f"{len(paper['figures'])} figures: {total}.", ""]


def experiments_table(paper: dict[str, Any]) -> list[str]:
    rows = ["| experiment | preset | varied | seeds | runs | dtype | training time (all runs, "
            "slowest) |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for e in paper["experiments"]:
        vary = "; ".join(f"{k}: {', '.join(map(str, v))}" for k, v in e["vary"].items())
        status = ", ".join(f"{n} {s}" for s, n in e["statuses"].items())
        rows.append(f"| `{e['key']}` | `{e['preset']}` | {vary or '(preset)'} | "
                    f"{seeds_text(e['seeds'])} | {e['runs']} of {e['planned']} ({status}) | "
                    f"{', '.join(map(str, e['dtype']))} | {e['seconds']:.0f} s, "
                    f"{e['slowest']:.0f} s |")
    return [*rows, ""]


def paper_section(paper: dict[str, Any], scale: str, png_dir: str) -> list[str]:
    out = [f"## {paper['title']}", ""]
    if paper["citation"]:
        out += [paper["citation"], ""]
    if paper["summary"]:
        out += [paper["summary"], ""]
    out += ["**Summary** (scale `" + scale + "`):", "", *summary_table(paper)]
    out += ["What was run:", "", *experiments_table(paper)]
    for fig in paper["figures"]:
        out += figure_section(fig, scale, png_dir)
    return out


def _values(field: list[dict[str, Any]]) -> str:
    if len(field) == 1:
        return _show(field[0]["value"])
    return "; ".join(f"{_show(v['value'])} ({v['runs']} runs)" for v in field)


def _show(value: Any) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k} {v}" for k, v in value.items() if v is not None)
    return str(value)


def environment_section(results: dict[str, Any]) -> list[str]:
    env, launch = results["environment"], results["launch"]
    fields = env["fields"]
    rows = []
    if launch:
        m0, m1 = launch["machine_before"], launch["machine_after"]
        rows += [("date", m0["date"]),
                 ("machine", f"{m0['cpu']}, {m0['cpus_usable']} usable cores of "
                             f"{m0['cpu_count']}, {m0['ram_gib']} GiB"),
                 ("load", f"load average {m0['load']} before, {m1['load']} after (1, 5, 15 "
                          f"min); CPU pressure (share of the wall time some task waited for "
                          f"a core): {pressure(launch)}"),
                 ("code", f"git {m0['git_head']}, engine sha256 {m0['engine_code_sha256']} "
                          "(at the last `run` over these results)"),
                 # A `run` keeps the runs it finds trained (same spec, same numbers), so its
                 # wall time counts only what it trained itself; each experiment's own
                 # training time is in its "What was run" table.
                 ("wall time", f"{launch['seconds']:.0f} s for the last `run` over these "
                               f"results ({launch['jobs']} runs at a time; runs it found "
                               "trained were kept, not counted)"),
                 ("command", f"`{launch['command']}`")]
    else:
        rows.append(("machine, load", "not recorded (the results were not made by "
                                      "scripts/make_reproduction_doc.py)"))
    rows += [
        ("runs", f"{env['runs']} run.json files"
                 + (f", {env['without']} without an environment" if env["without"] else "")),
        ("CPU, as each run saw it", f"{_values(fields['cpu'])}; torch CPU capability "
                                    f"{_values(fields['isa'])}; {_values(fields['os'])}"),
        ("torch threads", f"{_values(fields['torch_threads'])} intra-op, "
                          f"{_values(fields['interop_threads'])} inter-op"),
        ("dtype", _values(fields["dtype"])),
        *([("oneMKL branch", f"{_values(fields['mkl_cbwr'])} (MKL_CBWR, pinned by the "
                             "script; docs/reproduction-kernels.md compares its bits on two CPU "
                             "models)")]
          if "mkl_cbwr" in fields else []),  # results made before the branch was recorded
        ("determinism", f"device {_values(fields['device'])}, deterministic algorithms "
                        f"{_values(fields['deterministic'])} (warn only "
                        f"{_values(fields['deterministic_warn_only'])}), float32 matmul "
                        f"precision {_values(fields['float32_matmul_precision'])}"),
        ("versions", _values(fields["versions"])),
    ]
    return ["## Machine, settings and versions", "",
            "Read from each run's run.json (worker/engine/environment.py, where the run "
            "trained); a field with several values lists how many runs had each.", "",
            *[f"- **{k}**: {v}" for k, v in rows], ""]


def pressure(launch: dict[str, Any]) -> str:
    a, b = launch["machine_before"]["cpu_pressure_us"], launch["machine_after"][
        "cpu_pressure_us"]
    if a is None or b is None or not launch["seconds"]:
        return "not available"
    return f"{(b - a) / 1e6 / launch['seconds']:.2f}"


def dtype_section(d: dict[str, Any] | None) -> list[str]:
    if not d:
        return []
    out = ["## float32 against float64 on the deep linear network", "",
           dtype_intro(d["scale"], d["experiments"]), ""]
    secs = ", ".join(f"{t} {d['seconds'][t]:.0f} s" for t in DTYPES)
    out += [f"Training time, all runs: {secs}.", ""]
    out += ["| figure | claim | float32: holds | float32: median (range) | float64: holds | "
            "float64: median (range) | largest relative difference of a median |",
            "| --- | --- | --- | --- | --- | --- | --- |"]
    a, b = d["dtypes"][DTYPES[0]], d["dtypes"][DTYPES[1]]
    for fid, fa in a.items():
        fb = b.get(fid)
        if fb is None:
            continue
        for i, (ca, cb) in enumerate(zip(fa["claims"], fb["claims"], strict=True)):
            head = (f"**Fig {fid}**: {fa['verdict']} (float32), {fb['verdict']} (float64)"
                    if i == 0 else "")
            diff, key = largest_change(cb, ca)
            out.append(f"| {head} | {cell(ca['text'])} | {holds(ca)} | {cell(numbers(ca))} | "
                       f"{holds(cb)} | {cell(numbers(cb))} | {f(diff)} ({key}) |")
    out += ["", dtype_conclusion(d), "", ulp_intro(d), "",
            "| figure | claim | " + " | ".join(ulp_label(k) for k in ulp_keys()) + " |",
            "| --- | --- | " + " | ".join("---" for _ in ULPS) + " |"]
    for fid, base32 in d["first_seed"][DTYPES[0]].items():
        base = {dt: d["first_seed"][dt].get(fid) for dt in DTYPES}
        moved = {k: d["ulp"][k].get(fid) for k in ulp_keys()}
        if any(v is None for v in (*base.values(), *moved.values())):
            continue
        for i, claim in enumerate(base32["claims"]):
            cells = []
            for k in ulp_keys():
                ref = base[k.split("-")[0]]["claims"][i]
                new = moved[k]["claims"][i]
                diff, key = largest_change(ref, new)
                flip = " **verdict flips**" if ref["status"] != new["status"] else ""
                cells.append(f"{f(diff)} ({key}){flip}")
            out.append(f"| {'Fig ' + fid if i == 0 else ''} | {cell(claim['text'])} | "
                       + " | ".join(cells) + " |")
    return [*out, ""]


def dtype_conclusion(d: dict[str, Any]) -> str:
    """How many claims' statuses and figures' verdicts the precision changes, and the largest
    relative difference of a number between the two."""
    a, b = d["dtypes"][DTYPES[0]], d["dtypes"][DTYPES[1]]
    figs = [fid for fid in a if fid in b]
    pairs = [(fid, ca, cb) for fid in figs
             for ca, cb in zip(a[fid]["claims"], b[fid]["claims"], strict=True)]
    flips = [f"Fig {fid}: {ca['text']} ({holds(ca)} in float32, {holds(cb)} in float64)"
             for fid, ca, cb in pairs if (ca["k"], ca["n"]) != (cb["k"], cb["n"])]
    verdicts = sum(a[fid]["verdict"] != b[fid]["verdict"] for fid in figs)
    worst = max(((largest_change(cb, ca), fid) for fid, ca, cb in pairs),
                key=lambda t: t[0][0], default=None)
    text = (f"The precision changes the verdict of {verdicts} of {len(figs)} figures and "
            f"the outcome of {len(flips)} of {len(pairs)} claims")
    text += (": " + "; ".join(flips) + "." if flips else ".")
    if worst:
        (diff, key), fid = worst
        text += (f" The largest relative difference between the two precisions' medians is "
                 f"{f(diff)} (Fig {fid}, {key}).")
    return text


def ulp_keys() -> list[str]:
    return [f"{dt}-{unit}" for dt, unit in ULPS]


def ulp_label(key: str) -> str:
    dt, unit = key.split("-")
    return f"{dt} run, one {unit} ulp"


def ulp_intro(d: dict[str, Any]) -> str:
    seeds = {c["seeds"][0]["seed"] for fig in d["first_seed"][DTYPES[0]].values()
             for c in fig["claims"] if c["seeds"]}
    return ("Sensitivity to the start: the runs of seed "
            f"{', '.join(map(str, sorted(seeds, key=lambda s: s or 0)))} trained again with "
            "the first element of the first weight matrix moved to the next representable "
            "value above it. Each cell: the largest relative change of the claim's numbers "
            "against the unperturbed run of the same dtype (which number), and whether the "
            "claim's verdict changed.")


def page(results: dict[str, Any], png_dir: str, results_link: str) -> str:
    scale = results["scale"]
    papers = results["papers"]
    out = ["# Reproducing papers with Landscope", "",
           "Generated by `scripts/make_reproduction_doc.py` from a fresh run; every number "
           f"below is computed from [`{results_link}`]({results_link}), none is typed. "
           f"Scale `{scale}`.", ""]
    launch = results["launch"]
    if launch:
        commands = [launch["command"]]
        if results.get("write_command") and results["write_command"] != launch["command"]:
            commands.append(results["write_command"])
        out += ["Regenerate it with:", "", "```bash", *commands, "```", ""]
        if launch.get("only"):
            keys = ", ".join(f"`{k}`" for k in launch["only"].split(","))
            out += [f"**A partial page: only the experiments {keys}** (`--only`) and the "
                    "figures they feed; [reproduction.md](reproduction.md) has every paper.", ""]
        if launch["sets"]:
            sets = ", ".join(f"`{k}={v}`" for k, v in launch["sets"].items())
            out += [f"**Every run overrode {sets}** (`--set`): the descriptions of what was "
                    "run below do not say so, and the verdicts judge shortened runs.", ""]
    out += ["| paper | figures | reproduced | partly | not reproduced | no data |",
            "| --- | --- | --- | --- | --- | --- |"]
    for p in papers:
        counts = [sum(fig["verdict"] == v for fig in p["figures"]) for v in VERDICTS]
        out.append(f"| [{p['title']}](#{slug(p['title'])}) | {len(p['figures'])} | "
                   + " | ".join(map(str, counts)) + " |")
    out += ["", *RULES, ""]
    for p in papers:
        out += paper_section(p, scale, png_dir)
    out += dtype_section(results.get("dtype"))
    out += environment_section(results)
    out += HOW_TO_RUN
    return "\n".join(out).rstrip() + "\n"

