"""What answers below /api/v1 when no route does: JSON, never the dashboard.

The dashboard is mounted at / (landscope/cli/api_cmd.py) and serves its page for any path, so
without this an unknown /api/v1/... path (a typo, an old client) answered 200 with HTML. The
catch-all is registered after every API route: a path that exists with other methods still
gets its 405 and an Allow header, any other path a JSON 404.
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.routing import Match, Mount

METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]


def add_api_fallback(app: FastAPI, prefix: str) -> None:
    """Register the catch-all for `prefix`; call it after the API's own routes."""

    def not_found(request: Request) -> JSONResponse:
        allowed = _methods_for(request)
        if allowed:
            return JSONResponse(
                {"detail": f"{request.method} is not allowed here; use {', '.join(allowed)}"},
                status_code=405, headers={"Allow": ", ".join(allowed)},
            )
        return JSONResponse({"detail": f"no API route at {request.url.path}"}, status_code=404)

    app.add_api_route(f"{prefix}/{{path:path}}", not_found, methods=METHODS,
                      include_in_schema=False, name="api_not_found")


def _methods_for(request: Request) -> list[str]:
    """The methods some other route serves at this request's path. Each route is asked as
    if the request had come with each method: FastAPI nests included routers, so routes are
    matched rather than listed. The dashboard's mount (it matches every path) is not asked."""
    own = request.scope.get("route")
    candidates = [r for r in request.app.router.routes
                  if r is not own and not isinstance(r, Mount)]
    allowed = []
    for method in METHODS:
        scope = {**request.scope, "method": method}
        if any(r.matches(scope)[0] is Match.FULL for r in candidates):
            allowed.append(method)
    return allowed
