"""Small presentational pieces shared by pages: status badges, progress bars, durations."""

from __future__ import annotations

from typing import Any

from dash import html

from webapp.style import SDK_COLOR, STATUS_COLORS


def fmt_duration(seconds: float | None) -> str:
    """'1 h 02 min', '3 min 05 s', '42 s'; '' when unknown."""
    if seconds is None:
        return ""
    s = int(round(seconds))
    if s >= 3600:
        return f"{s // 3600} h {s % 3600 // 60:02d} min"
    if s >= 60:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s} s"


def status_badge(status: str, extra: str = "") -> html.Span:
    return html.Span(
        status + (f" {extra}" if extra else ""), className=f"badge status-{status}",
        style={"backgroundColor": STATUS_COLORS.get(status, "#888")},
    )


def source_badge(run: dict[str, Any]) -> html.Span | None:
    """'SDK' for a run trained by its user's own loop (landscope.init); None for the rest."""
    if run.get("source") != "sdk":
        return None
    return html.Span("SDK", className="badge source-sdk", style={"backgroundColor": SDK_COLOR},
                     title="trained by its user's own loop through the Python SDK")


def step_text(run: dict[str, Any]) -> str:
    """steps done/total; just the steps done when no total is known (an SDK run that gave
    none)."""
    step, total = run.get("step", 0), run.get("total", 0)
    return f"{step:,}/{total:,}" if total else f"{step:,} steps"


def progress_bar(run: dict[str, Any]) -> html.Div:
    """step/total as a bar with the count and, while running, the time left."""
    pct = 100 * float(run.get("progress") or 0)
    eta = fmt_duration(run.get("eta_seconds"))
    label = step_text(run) + (f" · {eta} left" if eta else "")
    return html.Div(
        [html.Div(className="progress-fill",
                  style={"width": f"{pct:.1f}%",
                         "backgroundColor": STATUS_COLORS.get(run.get("status", ""), "#888")}),
         html.Span(label, className="progress-label")],
        className="progress", title=f"{pct:.0f}%",
    )


def swatch(color: str, dash: str = "solid") -> html.Span:
    return html.Span(className="swatch", style={
        "borderTop": f"3px {'solid' if dash == 'solid' else 'dashed'} {color}"})
