"""Dashboard fixtures: the real API (FastAPI TestClient over a migrated SQLite file and the
embedded broker, no worker) with synthetic runs written as the worker's sink writes them, an
ApiClient over it, figure inputs built by hand, and a Patch interpreter to check that live
updates equal a rebuild."""

from __future__ import annotations

import copy
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from server.db.session import make_engine
from server.settings import Settings
from webapp.client import ApiClient


@dataclass
class Api:
    client: ApiClient
    http: TestClient
    engine: Engine
    settings: Settings


def make_api(tmp: Path, **limits: Any) -> Iterator[Api]:
    from server.api.app import create_app
    from server.db.migrate import upgrade

    url = f"sqlite:///{tmp / 'landscope.db'}"
    upgrade(url)
    settings = Settings(_env_file=None, data_dir=tmp, database_url=url,
                        broker_url=f"sqla+sqlite:///{tmp / 'broker.db'}", **limits)
    engine = make_engine(url)
    with TestClient(create_app(settings)) as http:
        # One thread: TestClient runs the app on its own event loop thread.
        client = ApiClient("http://testserver/api/v1", http=http, parallel=1)
        yield Api(client, http, engine, settings)
    engine.dispose()


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Api]:
    """A fresh, empty API per test."""
    yield from make_api(tmp_path)


@pytest.fixture
def api_with_limits(tmp_path: Path):
    """make(**limits) -> an Api whose server has these settings (LANDSCOPE_MAX_STEPS...)."""
    opened = []

    def make(**limits: Any) -> Api:
        folder = tmp_path / f"limited{len(opened)}"
        folder.mkdir()
        gen = make_api(folder, **limits)
        opened.append(gen)
        return next(gen)

    yield make
    for gen in opened:
        gen.close()


@pytest.fixture(autouse=True)
def _no_cached_runs():
    """The compare view caches finished runs per API URL, and every test's API has the same
    URL: start each test with an empty cache."""
    from webapp.compare.data import CACHE

    CACHE.clear()
    yield
    CACHE.clear()


def _run_json(rid: int, norm: str, *, status: str = "running", step: int = 0,
             total: int = 100, lr: float = 0.1, diverged_at: int | None = None,
             **spec: Any) -> dict[str, Any]:
    """A run as GET /runs/{id} returns it (the fields the dashboard reads)."""
    probes = {"landscape": {"every": 10, "multipliers": [0.5, 1.0, 2.0, 4.0]},
              "ics": {"every": 10, "layers": [2, 3]},
              "activations": {"every": 10, "bins": 8, "range": [-4.0, 4.0]},
              "sharpness": {"every": 20}}
    s = {"model": "mlp", "depth": 4, "width": 16, "norm": norm, "lr": lr, "steps": total,
         "loss": "cross_entropy", "seed": 0, "device": "cpu", "probes": probes, **spec}
    return {"id": rid, "name": f"run{rid}-{norm}", "spec": s, "status": status,
            "step": step, "total": total, "progress": step / total, "eta_seconds": None,
            "diverged_at": diverged_at, "worker": "w@host", "device": "cpu",
            "experiment_id": 1, "created_at": "2026-01-01T00:00:00Z", "last_loss": 0.5}


def _apply_patch(figure: dict[str, Any], patch: Any) -> dict[str, Any]:
    """What the browser does with a dash.Patch (the operations this app sends); None is
    Dash's no_update."""
    out = copy.deepcopy(figure)
    if patch is None:
        return out
    for op in patch.to_plotly_json()["operations"]:
        *path, leaf = op["location"]
        node = out
        for part in path:  # Dash's renderer creates missing levels (ramda assocPath)
            node = node[part] if isinstance(part, int) else node.setdefault(part, {})
        value = op["params"].get("value")
        if op["operation"] == "Extend":
            node[leaf].extend(value)
        elif op["operation"] == "Assign":
            node[leaf] = value
        else:
            raise AssertionError(f"unexpected patch operation {op['operation']}")
    return out


@pytest.fixture
def run_json():
    """make(id, norm, **changes): a run as the API returns it."""
    return _run_json


@pytest.fixture
def views(run_json):
    """The figures' usual pair: run 1 without normalisation, run 2 with BatchNorm (a test file
    that needs other runs defines its own `views`)."""
    from webapp.runsets import build_views

    return build_views([run_json(1, "none"), run_json(2, "batch")])


@pytest.fixture
def apply_patch():
    """apply(figure dict, Patch) -> the figure the browser ends up with."""
    return _apply_patch


# -- browser tests (test_e2e_*.py): Debian's chromium through Playwright, never `playwright
# install`.
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium (see .ci/run)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def shots(tmp_path):
    """save(page_or_locator, name, **screenshot_kw): a screenshot in tmp_path, and also in
    $LANDSCOPE_SCREENSHOT_DIR when set (how docs/screenshots are regenerated)."""
    extra = os.environ.get("LANDSCOPE_SCREENSHOT_DIR")

    def save(target, name: str, **kw) -> Path:
        if kw.get("full_page"):  # the sticky header belongs at the top of a full page
            target.evaluate("window.scrollTo(0, 0)")
        path = tmp_path / f"{name}.png"
        target.screenshot(path=str(path), **kw)
        if extra:
            Path(extra).mkdir(parents=True, exist_ok=True)
            target.screenshot(path=str(Path(extra) / f"{name}.png"), **kw)
        return path

    return save
