"""Dash's own routes answer bad requests with 4xx, never a 500.

Dash trusts its renderer: a callback body of the wrong shape, or naming a callback that does
not exist, fails deep in its dispatch with a KeyError or TypeError (a 500), and a component
path it does not serve raises DependencyException (a 500 too). Only a hand-made request can
do either, so both are the client's error: 400 for a callback body Dash could not dispatch,
404 for a file it does not have.

A well-formed body can still carry values no component produces (a dict where a dropdown gives
a string), and a callback then raises. Whether that is a bad request or a bug cannot be told
apart from the outside, and only a hand-made request sends such values (the browser tests and
the callbacks' own tests catch bugs), so the answer is a 400 and the traceback goes to the log
at ERROR. An API that cannot be reached is a 503, as the API itself answers. Dev mode
(LANDSCOPE_DEV) keeps Dash's own handler, which shows the traceback.
"""

from __future__ import annotations

import logging
from typing import Any

from dash import Dash
from dash.exceptions import DependencyException
from flask import jsonify, request
from werkzeug.exceptions import HTTPException

from webapp.client import ApiError

CALLBACK_ROUTE = "_dash-update-component"
log = logging.getLogger("landscope.webapp")


def install(app: Dash) -> None:
    server = app.server
    route = app.config.routes_pathname_prefix + CALLBACK_ROUTE

    @server.before_request
    def _check_callback_body():
        if request.method != "POST" or request.path != route:
            return None
        body = request.get_json(silent=True)
        problem = callback_body_problem(body, app.callback_map)
        if problem is None:
            return None
        return jsonify(detail=f"not a callback request Dash can dispatch: {problem}"), 400

    @server.errorhandler(DependencyException)
    def _no_such_file(_exc: DependencyException):
        return jsonify(detail="no such file"), 404

    @server.errorhandler(Exception)
    def _callback_failed(exc: Exception):
        if isinstance(exc, HTTPException):  # Flask's own 4xx (and 405s): as they are
            return exc
        if request.path != route:
            log.error("dashboard: %s %s failed", request.method, request.path, exc_info=exc)
            return jsonify(detail="internal error"), 500
        return callback_error(exc)


def callback_error(exc: Exception):
    """The answer for a callback that raised (see the module docstring)."""
    if isinstance(exc, ApiError) and (exc.status == 0 or exc.status >= 500):
        return jsonify(detail=f"the API cannot answer: {exc.message}"), 503
    if isinstance(exc, ApiError) and exc.status in (401, 403):
        return jsonify(detail=exc.message), exc.status
    log.error("dashboard callback failed on its inputs", exc_info=exc)
    return jsonify(detail="the callback cannot handle these inputs"), 400


def callback_body_problem(body: Any, callback_map: dict[str, dict]) -> str | None:
    """What keeps Dash from dispatching `body`, or None: the shape its renderer sends,
    for a callback registered on the server, with its inputs and states in their order."""
    if not isinstance(body, dict):
        return "the body must be a JSON object"
    output = body.get("output")
    if not isinstance(output, str):
        return "'output' must be a string"
    cb = callback_map.get(output)
    if cb is None or "callback" not in cb:
        return "'output' names no server callback"
    for key in ("inputs", "state"):
        problem = _dependencies_problem(body.get(key, []), cb.get(key, []), key)
        if problem:
            return problem
    outputs = body.get("outputs", [])
    if isinstance(outputs, dict):
        outputs = [outputs]
    if not isinstance(outputs, list) or not all(_is_prop(o, allow_list=True) for o in outputs):
        return "'outputs' must be a list of {id, property} objects"
    changed = body.get("changedPropIds", [])
    if not isinstance(changed, list) or not all(isinstance(c, str) for c in changed):
        return "'changedPropIds' must be a list of strings"
    return None


def _dependencies_problem(given: Any, registered: list[dict], key: str) -> str | None:
    if not isinstance(given, list) or len(given) != len(registered):
        return f"'{key}' must be a list of the callback's {len(registered)} {key}"
    for i, (g, r) in enumerate(zip(given, registered, strict=True)):
        if not _is_prop(g, allow_list=True):
            return f"'{key}'[{i}] must be an {{id, property, value}} object"
        # Pattern-matching ids (dicts, or lists of matches) are checked by shape only.
        if isinstance(g, dict) and isinstance(g["id"], str) and (
            g["id"] != r.get("id") or g["property"] != r.get("property")
        ):
            return f"'{key}'[{i}] is not {r.get('id')}.{r.get('property')}"
    return None


def _is_prop(item: Any, allow_list: bool = False) -> bool:
    if allow_list and isinstance(item, list):
        return all(_is_prop(i) for i in item)
    return (isinstance(item, dict) and isinstance(item.get("id"), str | dict)
            and isinstance(item.get("property"), str))
