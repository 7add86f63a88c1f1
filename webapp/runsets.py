"""The runs being compared, as the figures need them: a colour per normalisation, a name for the
legend, a dash to tell apart runs that share a normalisation, and a cell in the facet grid
(a column per normalisation, a row per value of whatever else differs, e.g. the LR).

Pure functions over the API's run JSON, so a page and a test build the same views.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from server.spec import flatten
from webapp.style import DASHES, NORM_ORDER, norm_color, norm_label

MAX_COLS = 4  # a single row of facets wraps after this many columns, to stay legible
_SKIP_DIFF = frozenset({"norm", "device"})  # norm has its column; device changes no result


@dataclass(frozen=True)
class RunView:
    """What the figures draw a run with; nothing here changes while the run trains (its
    status and progress live in the run JSON), so figure layouts can be cached on it."""

    id: int
    name: str
    label: str  # legend text: the normalisation and what else sets this run apart
    norm: str
    color: str
    dash: str
    lr: float
    total: int
    diverged_at: int | None
    row: int
    col: int
    classify: bool  # reports accuracy (cross-entropy runs)
    ics_layers: tuple[int, ...]
    n_layers: int  # normalised layers with activation histograms
    multipliers: tuple[float, ...]
    landscape_every: int
    act_range: tuple[float, float]  # the fixed histogram range of the activations probe
    act_bins: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunView:
        d = dict(d)
        for k in ("ics_layers", "multipliers", "act_range"):
            d[k] = tuple(d[k])
        return cls(**d)


@dataclass(frozen=True)
class Grid:
    rows: int
    cols: int
    titles: list[str]  # one per cell, row-major ("" where no run sits)


def differing_keys(specs: list[dict[str, Any]]) -> list[str]:
    """Spec fields (dotted) whose value is not the same in every run, norm and device aside."""
    flat = [flatten(s) for s in specs]
    keys = sorted({k for f in flat for k in f})
    return [k for k in keys if k not in _SKIP_DIFF and len({repr(f.get(k)) for f in flat}) > 1]


def _short(key: str, value: Any) -> str:
    name = key.rsplit(".", 1)[-1]
    if isinstance(value, float):
        value = f"{value:g}"
    return f"{name} {value}"


def _recorded_layers(run: dict[str, Any]) -> int | None:
    """What the worker that built the network recorded (RunOut.layers): the only count a
    plug-in model has (its spec's depth means nothing)."""
    n = run.get("layers")
    return n if isinstance(n, int) and not isinstance(n, bool) and n >= 0 else None


def _layers(spec: dict[str, Any]) -> int:
    if spec.get("model") == "vgg":
        from server.spec import VGG_CONFIGS  # the same table the engine builds VGG from

        return sum(1 for c in VGG_CONFIGS[int(spec.get("vgg_config", 11))] if c != "M")
    if spec.get("model") == "resnet":  # a norm slot after every conv: depth - 1 of them
        return int(spec.get("resnet_depth", 20)) - 1
    return max(0, int(spec.get("depth", 1)) - 1)


def build_views(runs: list[dict[str, Any]]) -> list[RunView]:
    """Runs (API JSON) in display order with colours, labels and facet cells."""
    runs = sorted(runs, key=lambda r: (_norm_rank(r["spec"].get("norm", "none")), r["id"]))
    specs = [r["spec"] for r in runs]
    diff = differing_keys(specs)
    others = [tuple(_short(k, flatten(s).get(k)) for k in diff) for s in specs]
    norms = [s.get("norm", "none") for s in specs]
    col_of = {n: i for i, n in enumerate(dict.fromkeys(norms))}
    row_keys = list(dict.fromkeys(others))
    # Two runs in one cell (the same spec twice) get rows of their own.
    cells: dict[tuple[int, int], int] = {}
    placed: list[tuple[int, int]] = []
    for norm, other in zip(norms, others, strict=True):
        row, col = row_keys.index(other), col_of[norm]
        while (row, col) in cells:
            row += len(row_keys)
        cells[(row, col)] = 1
        placed.append((row, col))
    if len(row_keys) == 1 and len(col_of) > MAX_COLS and len(set(placed)) == len(placed):
        placed = [(c // MAX_COLS, c % MAX_COLS) for _r, c in placed]
    dash_count: dict[str, int] = {}
    views = []
    for run, spec, norm, other, (row, col) in zip(runs, specs, norms, others, placed,
                                                  strict=True):
        k = dash_count.get(norm, 0)
        dash_count[norm] = k + 1
        views.append(_view(run, spec, norm, other, row, col, DASHES[k % len(DASHES)]))
    return views


def _view(run, spec, norm, other, row, col, dash) -> RunView:
    probes = spec.get("probes", {})
    ics = probes.get("ics", {})
    label = norm_label(norm) + (" · " + ", ".join(other) if other else "")
    return RunView(
        id=run["id"], name=run["name"], label=label, norm=norm, color=norm_color(norm),
        dash=dash, lr=float(spec.get("lr", math.nan)), total=int(run.get("total") or 0),
        diverged_at=run.get("diverged_at"), row=row, col=col,
        classify=spec.get("loss", "cross_entropy") == "cross_entropy",
        ics_layers=tuple(ics.get("layers", [])) if ics.get("every") else (),
        n_layers=(_recorded_layers(run) if _recorded_layers(run) is not None else _layers(spec))
        if probes.get("activations", {}).get("every") else 0,
        multipliers=tuple(probes.get("landscape", {}).get("multipliers", [])),
        landscape_every=int(probes.get("landscape", {}).get("every", 0)),
        act_range=tuple(probes.get("activations", {}).get("range", (-6.0, 6.0))),
        act_bins=int(probes.get("activations", {}).get("bins", 64)),
    )


def _norm_rank(norm: str) -> int:
    return NORM_ORDER.index(norm) if norm in NORM_ORDER else len(NORM_ORDER)


def grid_of(views: list[RunView]) -> Grid:
    rows = max((v.row for v in views), default=0) + 1
    cols = max((v.col for v in views), default=0) + 1
    titles = [""] * (rows * cols)
    for v in views:
        titles[v.row * cols + v.col] = v.label
    return Grid(rows, cols, titles)


def max_total(views: list[RunView]) -> int:
    return max((v.total for v in views), default=0)
