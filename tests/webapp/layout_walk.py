"""Walking a page's Dash components in tests: every component, by id, the ids, the text.
Shared by the page and form tests (test_pages, test_new_experiment, test_missing_pages,
test_landscape_tab, test_landscape_form, test_experiment_delete, test_environment_view,
test_spectrum_table)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any


def walk(component: Any) -> Iterator[Any]:
    """Every component under `component` (itself included), depth first, in page order;
    a list or tuple of components is walked in turn."""
    if isinstance(component, list | tuple):
        for c in component:
            yield from walk(c)
        return
    if component is None or isinstance(component, str | int | float):
        return
    yield component
    yield from walk(getattr(component, "children", None))


def components(layout: Any) -> dict[str, Any]:
    """id -> component, for every component of a layout with a string id."""
    return {c.id: c for c in walk(layout) if isinstance(getattr(c, "id", None), str)}


def ids_in(layout: Any) -> set[str]:
    """Every string id in a layout."""
    return set(components(layout))


def find(layout: Any, node_id: str) -> Any:
    """The component with this id, or None."""
    return next((c for c in walk(layout) if getattr(c, "id", None) == node_id), None)


def text(node: Any) -> str:
    """Every string under a Dash component, space-joined."""
    if node is None:
        return ""
    if isinstance(node, str | int | float):
        return str(node)
    if isinstance(node, list | tuple):
        return " ".join(text(n) for n in node)
    return text(getattr(node, "children", None))


def texts(component: Any) -> list[str]:
    """Every string in a component tree, one list item each, depth first."""
    if isinstance(component, str):
        return [component]
    children = getattr(component, "children", None)
    if children is None:
        return []
    if not isinstance(children, list | tuple):
        children = [children]
    return [t for c in children for t in texts(c)]
