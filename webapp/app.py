"""The dashboard: `create_dash(api_base_url)` builds the Dash app that `landscope up` (and
`landscope api`) mount at / on the API's own port (landscope/cli/api_cmd.py: mount_dashboard).

It reads and changes everything through the REST API (webapp/client.py), never the database,
so it can also run on its own against a remote server:

    python -m webapp.app http://gpu-box:8000/api/v1 --port 8050
"""

from __future__ import annotations

import argparse
import contextvars
from pathlib import Path

import dash
from dash import Dash, Input, Output, dcc, html
from werkzeug.http import parse_cookie

from webapp import annotations, guard
from webapp.client import ApiClient, acting_with
from webapp.compare import callbacks as compare_callbacks
from webapp.index_page import INDEX_STRING, LandscopeDash, preload_links
from webapp.pages import (
    compare,
    experiment,
    new_experiment,
    not_found_404,
    reproduction,
    run,
    runs,
)

PAGES = (runs, new_experiment, experiment, compare, reproduction, run, not_found_404)
ASSETS = Path(__file__).resolve().parent / "assets"
TOKEN_COOKIE = "landscope_token"

# The header's token field keeps the token in this browser (localStorage) and in a cookie that
# goes with the dashboard's own callback requests, so every API call made for this browser,
# reads included, carries it (a server may protect reads). SameSite=Strict: no other site's
# page can make the browser send it.
SET_TOKEN_COOKIE = """function(token) {
    var secure = window.location.protocol === 'https:' ? '; Secure' : '';
    document.cookie = '%s=' + (token ? encodeURIComponent(token) : '') + '; path=%s' +
        '; SameSite=Strict' + (token ? '; max-age=31536000' : '; max-age=0') + secure;
    return token ? 'set' : 'cleared';
}"""


def shell(prefix: str, docs_url: str = "/docs") -> html.Div:
    """What every page shares: the header with navigation and the API token, and a
    location the pages' callbacks navigate with (callback-nav: no full reload)."""
    return html.Div([
        dcc.Location(id="nav", refresh="callback-nav"),
        html.Header([
            dcc.Link([html.Span("◭", className="logo"), "Landscope"], href=prefix,
                     className="brand"),
            html.Nav([
                dcc.Link("Runs", href=prefix, className="nav-link"),
                dcc.Link("New experiment", href=f"{prefix}new", className="nav-link"),
                dcc.Link("Reproduction", href=f"{prefix}reproduction", className="nav-link"),
                html.A("API", href=docs_url, className="nav-link", target="_blank"),
            ], className="nav"),
            html.Div(dcc.Input(id="token", type="password", placeholder="API token (optional)",
                               persistence=True, persistence_type="local",
                               className="token-input", debounce=True),
                     title="needed to launch, cancel or delete when the server sets "
                     "LANDSCOPE_API_TOKEN (and to see anything if it protects reads); "
                     "kept in this browser"),
        ], className="topbar"),
        dcc.Store(id="token-cookie"),
        html.Main(dash.page_container, className="main"),
    ], className="app")


def with_request_token(wsgi_app):
    """WSGI middleware: each request runs in its own context holding the browser's token
    (from its cookie), which the API client sends (webapp/client.py: acting_with)."""

    def app(environ, start_response):
        token = parse_cookie(environ).get(TOKEN_COOKIE)

        def call():
            with acting_with(token):
                return wsgi_app(environ, start_response)

        return contextvars.copy_context().run(call)

    return app


def create_dash(api_base_url: str, *, requests_pathname_prefix: str = "/",
                client: ApiClient | None = None, poll_ms: int = 1000, dev: bool = False) -> Dash:
    """The dashboard app for the API at `api_base_url` (e.g. http://127.0.0.1:8000/api/v1).

    `requests_pathname_prefix`: where browsers reach the app when it is mounted below /.
    `client`: an ApiClient to use instead of one over HTTP (tests pass one over a TestClient).
    `poll_ms`: how often a live page asks for new points.
    `dev`: Dash's dev tools (error pop-ups with tracebacks, the callback graph): for
    development only (LANDSCOPE_DEV), since they show server internals to every visitor.
    """
    app = LandscopeDash(
        __name__,
        use_pages=True,
        pages_folder="",  # pages register themselves below, with the API client they use
        assets_folder=str(ASSETS),
        requests_pathname_prefix=requests_pathname_prefix,
        suppress_callback_exceptions=True,  # page components exist only on their page
        title="Landscope",
        update_title=None,  # a live page polls every second: no "Updating..." flicker
    )
    app.index_string = INDEX_STRING.replace("{%preload%}",
                                            preload_links(requests_pathname_prefix))
    client = client or ApiClient(api_base_url)
    # The callback functions by page, as written (Dash returns them undecorated): tests call
    # them directly with inputs.
    app.landscope_callbacks = {page.__name__.rsplit(".", 1)[-1]: page.register(
        app, client, poll_ms) for page in PAGES}
    app.landscope_callbacks["compare_view"] = compare_callbacks.register(app, client)
    app.landscope_callbacks["annotations"] = annotations.register(app, client)
    app.layout = shell(requests_pathname_prefix, client.docs_url())
    app.clientside_callback(SET_TOKEN_COOKIE % (TOKEN_COOKIE, requests_pathname_prefix),
                            Output("token-cookie", "data"), Input("token", "value"))
    app.server.wsgi_app = with_request_token(app.server.wsgi_app)
    guard.install(app)  # hand-made bad requests to Dash's own routes: 400/404, never a 500
    if dev:
        app.enable_dev_tools(debug=True, dev_tools_hot_reload=False)
    return app


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Serve the Landscope dashboard on its own.")
    parser.add_argument("api", help="the API's base URL, e.g. http://127.0.0.1:8000/api/v1")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8050)
    args = parser.parse_args(argv)
    client = ApiClient(args.api, public_url=args.api)
    create_dash(args.api, client=client).run(host=args.host, port=args.port, debug=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
