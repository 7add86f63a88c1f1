"""Small presentational pieces shared by pages: status badges, progress bars, durations."""

from __future__ import annotations

from typing import Any

from dash import html

from webapp.style import STATUS_COLORS


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


def progress_bar(run: dict[str, Any]) -> html.Div:
    """step/total as a bar with the count and, while running, the time left."""
    pct = 100 * float(run.get("progress") or 0)
    eta = fmt_duration(run.get("eta_seconds"))
    label = f"{run.get('step', 0):,}/{run.get('total', 0):,}" + (f" · {eta} left" if eta else "")
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
