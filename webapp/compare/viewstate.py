"""The compare view's state as the URL carries it (contract C), so a copied link reopens
exactly the view that was seen:

    runs=1,2,3 · group=1|0 · center=median|mean · band=minmax|std · smooth=0..0.99
    · x=step|epoch|samples|wall · logx=1 · logy=training,ics · range=lo,hi · figs=... · layer=N

and, beyond the contract's list, single=1 (single runs drawn under the groups), arrange=overlay,
steps=lo,hi (the fetched step range) and scope=unit. A key at its default is left out, so links
stay short; a value the page cannot use is ignored (the default applies), never an error:
links are typed and pasted by hand.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import parse_qs, urlencode

CENTERS = ("median", "mean")
BANDS = ("minmax", "std")
XAXES = ("step", "epoch", "samples", "wall")
MAX_SMOOTH = 0.99


@dataclass(frozen=True)
class ViewState:
    runs: tuple[int, ...] = ()  # the compare page's runs (the experiment page: its own)
    group: bool | None = None  # None: grouped when any group has more than one run
    center: str = "median"
    band: str = "minmax"
    smooth: float = 0.0
    x: str = "step"
    logx: bool = False
    logy: tuple[str, ...] | None = None  # None: the page's choice (the paper's log axes)
    range: tuple[float, float] | None = None  # x range shown (zoom), in the x axis' units
    figs: tuple[str, ...] | None = None  # None: every figure
    layer: int | None = None
    single: bool = False
    arrange: str = "side"
    steps: tuple[int | None, int | None] | None = None
    scope: str = "layer"

    def with_(self, **changes: Any) -> ViewState:
        return replace(self, **changes)


def _ints(text: str) -> tuple[int, ...]:
    out: list[int] = []
    for part in text.split(","):
        part = part.strip()
        if part.isascii() and part.isdigit() and int(part) not in out:
            out.append(int(part))
    return tuple(out)


def _names(text: str) -> tuple[str, ...]:
    return tuple(dict.fromkeys(p.strip() for p in text.split(",") if p.strip()))


def _float(text: str) -> float | None:
    try:
        v = float(text)
    except ValueError:
        return None
    return v if math.isfinite(v) else None


def _pair(text: str) -> tuple[float, float] | None:
    parts = text.split(",")
    if len(parts) != 2:
        return None
    a, b = _float(parts[0]), _float(parts[1])
    if a is None or b is None or a == b:
        return None
    return (min(a, b), max(a, b))


def _steps(text: str) -> tuple[int | None, int | None] | None:
    parts = text.split(",")
    if len(parts) != 2:
        return None
    vals = [int(p) if p.strip().isascii() and p.strip().isdigit() else None for p in parts]
    return None if vals == [None, None] else (vals[0], vals[1])


def _one(query: Mapping[str, Any], key: str) -> str | None:
    v = query.get(key)
    if isinstance(v, list | tuple):
        v = v[-1] if v else None
    return None if v is None else str(v)


def from_query(query: Mapping[str, Any] | str) -> ViewState:
    """A ViewState from a query string ('?a=1&b=2' or 'a=1') or a parsed mapping (Dash passes
    a page's query parameters as keyword arguments: str, or a list when repeated)."""
    if isinstance(query, str):
        query = {k: v for k, v in parse_qs(query.lstrip("?"), keep_blank_values=True).items()}
    s = ViewState()
    changes: dict[str, Any] = {}
    if (v := _one(query, "runs")) is not None:
        changes["runs"] = _ints(v)
    if (v := _one(query, "group")) in ("0", "1"):
        changes["group"] = v == "1"
    if (v := _one(query, "center")) in CENTERS:
        changes["center"] = v
    if (v := _one(query, "band")) in BANDS:
        changes["band"] = v
    if (v := _one(query, "smooth")) is not None and (f := _float(v)) is not None:
        changes["smooth"] = round(min(MAX_SMOOTH, max(0.0, f)), 3)
    if (v := _one(query, "x")) in XAXES:
        changes["x"] = v
    if _one(query, "logx") == "1":
        changes["logx"] = True
    if (v := _one(query, "logy")) is not None:
        changes["logy"] = tuple(sorted(_names(v)))
    if (v := _one(query, "range")) is not None:
        changes["range"] = _pair(v)
    if (v := _one(query, "figs")) is not None and _names(v):
        changes["figs"] = _names(v)
    if (v := _one(query, "layer")) is not None and v.isascii() and v.isdigit() and int(v) > 0:
        changes["layer"] = int(v)
    if _one(query, "single") == "1":
        changes["single"] = True
    if _one(query, "arrange") == "overlay":
        changes["arrange"] = "overlay"
    if (v := _one(query, "steps")) is not None:
        changes["steps"] = _steps(v)
    if _one(query, "scope") == "unit":
        changes["scope"] = "unit"
    return replace(s, **changes)


def _num(v: float) -> str:
    """Short and exact enough to reopen the same view: 6 significant digits."""
    return f"{v:.6g}"


def to_pairs(s: ViewState) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    if s.runs:
        out.append(("runs", ",".join(map(str, s.runs))))
    if s.group is not None:
        out.append(("group", "1" if s.group else "0"))
    if s.center != "median":
        out.append(("center", s.center))
    if s.band != "minmax":
        out.append(("band", s.band))
    if s.smooth:
        out.append(("smooth", _num(s.smooth)))
    if s.x != "step":
        out.append(("x", s.x))
    if s.logx:
        out.append(("logx", "1"))
    if s.logy is not None:
        out.append(("logy", ",".join(sorted(s.logy))))
    if s.range is not None:
        out.append(("range", f"{_num(s.range[0])},{_num(s.range[1])}"))
    if s.figs is not None:
        out.append(("figs", ",".join(s.figs)))
    if s.layer is not None:
        out.append(("layer", str(s.layer)))
    if s.single:
        out.append(("single", "1"))
    if s.arrange != "side":
        out.append(("arrange", s.arrange))
    if s.steps is not None:
        out.append(("steps", ",".join("" if v is None else str(v) for v in s.steps)))
    if s.scope != "layer":
        out.append(("scope", s.scope))
    return out


def to_query(s: ViewState, extra: Mapping[str, str] | None = None) -> str:
    """'?runs=1,2&group=1...' ('' when everything is at its default). `extra`: other query
    parameters of the page to keep (the experiment page's tab)."""
    pairs = [*(extra or {}).items(), *to_pairs(s)]
    return "?" + urlencode(pairs, safe=",") if pairs else ""
