"""The request-timeout middleware (server/api/timeouts.py) and the deadline it gives each request
(server/deadline.py), on a small app whose handlers block until the test releases them: a
request not answering by its deadline gets 503 and can no longer commit; a commit in flight at
the deadline is waited for; an answer already begun is never cut."""

from __future__ import annotations

import threading
import time

import pytest
from fastapi import FastAPI
from fastapi.responses import StreamingResponse
from fastapi.testclient import TestClient

from server import deadline
from server.api import timeouts
from server.settings import Settings

TIMEOUT = 1.0
WAIT = 30.0  # generous: a slow, shared CI machine


class Handlers:
    """What the test app's handlers did, and the events that release them."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.committed: list[str] = []
        self.refused: list[str] = []
        self.done = threading.Event()

    def commit(self, what: str) -> None:
        try:
            with deadline.committing():
                self.committed.append(what)
        except deadline.RequestExpired:
            self.refused.append(what)
            raise
        finally:
            self.done.set()


@pytest.fixture
def app_and_handlers():
    h = Handlers()
    app = FastAPI()
    stragglers = timeouts.install(app, TIMEOUT, commit_grace=1.0)

    @app.post("/quick")
    def quick() -> dict:
        h.commit("quick")
        return {"ok": True}

    @app.post("/stuck-then-commit")
    def stuck_then_commit() -> dict:
        with deadline.waiting_on("the database"):
            assert h.release.wait(WAIT)
        h.commit("late")
        return {"ok": True}

    @app.post("/commit-across-the-deadline")
    def commit_across() -> dict:
        with deadline.committing():
            assert h.release.wait(WAIT)  # a commit still in flight when the deadline passes
            h.committed.append("slow commit")
        return {"ok": True}

    @app.post("/commit-then-stuck")
    def commit_then_stuck() -> dict:
        h.commit("saved")
        deadline.note_saved([7, 8])
        with deadline.waiting_on("the message broker"):
            assert h.release.wait(WAIT)
        return {"ok": True}

    @app.get("/stream")
    def stream() -> StreamingResponse:
        def chunks():
            yield b"first;"
            assert h.release.wait(WAIT)
            yield b"last"
        return StreamingResponse(chunks())

    with TestClient(app) as client:
        yield client, h, stragglers
        h.release.set()  # let any handler still blocked end before the client closes


def test_the_default_bound_is_10_s():
    assert Settings(_env_file=None).request_timeout_seconds == 10.0


def test_a_quick_request_is_untouched(app_and_handlers):
    client, h, _ = app_and_handlers
    r = client.post("/quick")
    assert r.status_code == 200 and h.committed == ["quick"]


def test_a_request_past_its_deadline_gets_503_and_never_commits(app_and_handlers):
    client, h, stragglers = app_and_handlers
    started = time.monotonic()
    r = client.post("/stuck-then-commit")
    assert r.status_code == 503
    assert TIMEOUT <= time.monotonic() - started < TIMEOUT + 3
    assert r.headers["retry-after"] == "5"
    assert r.json() == {"detail": "the request did not finish within 1 s (waiting on the "
                                  "database); nothing was changed, try again later"}
    assert len(stragglers.tasks) == 1  # its handler still runs...
    h.release.set()
    assert h.done.wait(WAIT)
    assert h.committed == [] and h.refused == ["late"]  # ...and could not commit


def test_a_commit_in_flight_at_the_deadline_is_waited_for(app_and_handlers):
    client, h, _ = app_and_handlers

    def release_after_the_deadline() -> None:
        time.sleep(TIMEOUT + 0.3)  # the middleware's own clock is what is tested here
        h.release.set()

    threading.Thread(target=release_after_the_deadline, daemon=True).start()
    started = time.monotonic()
    r = client.post("/commit-across-the-deadline")
    assert r.status_code == 200, r.text  # it committed: its own answer, not a 503
    assert time.monotonic() - started > TIMEOUT
    assert h.committed == ["slow commit"]


def test_a_request_stuck_after_its_commit_names_what_it_saved(app_and_handlers):
    client, h, _ = app_and_handlers
    r = client.post("/commit-then-stuck")
    assert r.status_code == 503
    assert r.json()["unsent_run_ids"] == [7, 8]
    assert r.json()["detail"].startswith("run(s) 7, 8 were saved")
    assert "(waiting on the message broker)" in r.json()["detail"]
    assert h.committed == ["saved"]


def test_an_answer_already_begun_is_never_cut(app_and_handlers):
    client, h, _ = app_and_handlers
    with client.stream("GET", "/stream") as r:
        assert r.status_code == 200
        chunks = r.iter_bytes()
        assert next(chunks) == b"first;"
        time.sleep(TIMEOUT + 0.3)  # past the deadline, on the middleware's clock
        h.release.set()
        assert b"".join(chunks) == b"last"
