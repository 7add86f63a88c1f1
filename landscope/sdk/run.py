"""`landscope.init()` and Run: a user's own training loop, recorded by Landscope.

    run = landscope.init(server="http://127.0.0.1:8000", experiment="sweep", name="bn",
                         config={"lr": 0.1}, total=1000)
    for step ...:
        run.log(step, {"train/loss": loss, "train/acc": acc})
    run.finish()

Online (server given) the records go through an HttpTransport (a background thread, a spool
on disk while the server is away); offline (server None, dir given) into a run directory that
`landscope sync DIR` uploads later. Run is also an engine MetricSink (worker/engine/sink.py),
so the engine's probes and analyses write into it as into any other sink.

run.log does as little as it can on the training thread: it checks the types (a bad value is
an error there, where the user can see it, not a lost batch later) and appends one tuple;
everything else (grouping, conversion to float64, encoding, compression) is the sender's.
bench/transport_cost.py counts what a call costs. Now and then (about every 1 % of `total`
steps, at each flush and at finish; worker/engine/wallclock.py) it adds `time/wall_s`, the
seconds since init, for the dashboard's wall-time x-axis.
"""

from __future__ import annotations

import atexit
import os
import sys
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from landscope.sdk.api import Api, SdkError, ServerUnreachable
from landscope.sdk.offline import OfflineWriter
from landscope.sdk.spool import Spool, default_root
from landscope.sdk.transport import HttpTransport, TransportOptions
from landscope.sdk.values import (
    MAX_STEP,
    PLAIN,
    as_config,
    as_name,
    as_step,
    check_keys,
    clean,
)
from worker.engine.wallclock import WALL_KEY, WallClock

WALL_KEYS = (WALL_KEY,)  # one tuple for every wall point: the sender groups rows by identity

FINISH_STATUSES = ("succeeded", "failed", "cancelled")


class Run:
    """One run of a user's loop. Use init() to make one."""

    def __init__(self, *, client_id: str, name: str, experiment: str | None,
                 config: dict[str, Any], total: int | None, id: int | None = None,
                 transport: HttpTransport | None = None,
                 offline: OfflineWriter | None = None) -> None:
        self.id = id
        self.client_id = client_id
        self.name = name
        self.experiment = experiment
        self.config = config
        self.total = total
        self.status = "running"
        self.last_step: int | None = None
        self._transport = transport
        self._offline = offline
        # run.log appends (step, keys, values) rows with one C call: to the transport's deque
        # online (the sender is woken when `_wake_rows` wait), else to the offline writer.
        if transport is not None:
            self._put_row = transport.rows.append
            self._wake = transport.wake
        else:
            self._put_row = offline.put_row  # type: ignore[union-attr]
            self._wake = None
        self._rows = transport.rows if transport is not None else ()
        self._wake_rows = -1  # set by _new_keys online; never len(self._rows) offline
        self._known_keys: set[tuple] = set()
        self._keys: tuple = ()  # the keys of the last log call, checked
        self._pid = os.getpid()
        self._clock = WallClock(total)  # time/wall_s: seconds since init
        _live_runs.add(self)

    @property
    def online(self) -> bool:
        return self._transport is not None

    @property
    def api(self) -> Api | None:
        """The server connection (for uploads such as landscope.analyse); None offline."""
        return self._transport.api if self._transport else None

    @property
    def dir(self) -> Path | None:
        """The offline run directory; None online."""
        return self._offline.dir if self._offline else None

    @property
    def spool_dir(self) -> Path | None:
        return self._transport.spool.path if self._transport else None

    # -- the training loop's calls

    def log(self, step: int, values: Mapping[str, Any]) -> None:
        """Record `values` at `step`: floats, ints, one-element tensors; NaN and inf are kept.
        The first value logged for a (key, step) is the one stored."""
        if self.status != "running":
            raise RuntimeError(f"run {self.name!r} has finished ({self.status}); start a new "
                               "one with landscope.init()")
        if type(step) is not int or not 0 <= step <= MAX_STEP:
            step = as_step(step)
        self.last_step = step
        # Keys and values as tuples: a copy the caller cannot change under us, made in C.
        keys = tuple(values)
        if keys == self._keys:  # a loop logs the same keys step after step: checked once
            keys = self._keys  # and the same tuple each time (the sender groups by identity)
        else:
            self._new_keys(keys)
        vals = tuple(values.values())
        if not PLAIN.issuperset(map(type, vals)):
            vals = clean(keys, vals)
        self._put_row((step, keys, vals))
        if len(self._rows) == self._wake_rows:  # a batch's worth waits: cut it now
            self._wake()
        if step >= self._clock.next_due:  # about every 1 % of the run: one int compare
            self._wall_point(step)

    def _wall_point(self, step: int | None) -> None:
        """time/wall_s at `step` (the newest logged step), unless it has one already."""
        if step is not None and (point := self._clock.point(step)) is not None:
            self._put_row((step, WALL_KEYS, (point[WALL_KEY],)))
            if len(self._rows) >= self._wake_rows > 0:  # it may have stepped over the mark
                self._wake()

    def _new_keys(self, keys: tuple) -> None:
        if keys not in self._known_keys:
            check_keys(keys)
            if len(self._known_keys) < 10_000:
                self._known_keys.add(keys)
        self._keys = keys
        if self._transport is not None:  # rows of this width that make a batch
            self._wake_rows = max(1, self._transport.opt.max_points // max(1, len(keys)))

    # MetricSink (worker/engine/sink.py): the engine's probes and analyses emit here.
    def scalars(self, step: int, values: Mapping[str, float]) -> None:
        self.log(step, values)

    def eta_records(self, step: int, probe: str, records: Sequence[Any]) -> None:
        (self._transport or self._offline).put_etas(as_step(step), probe, records)  # type: ignore

    def distributions(self, step: int, records: Sequence[Any]) -> None:
        (self._transport or self._offline).put_dists(as_step(step), records)  # type: ignore

    def flush(self, timeout: float | None = None) -> bool:
        """Make everything logged so far durable: on disk (the spool, or the offline folder).
        With `timeout`: also wait (at most that many seconds) until the server acknowledged
        it. True when done. The engine calls flush() before a checkpoint: it never waits on
        the network there."""
        if self.status == "running":
            self._wall_point(self.last_step)
        if self._transport is None:
            self._offline.flush()  # type: ignore[union-attr]
            return True
        if timeout is None:
            return self._transport.spooled()
        return self._transport.flush(timeout)

    def close(self) -> None:
        if self.status == "running":
            self.finish()

    @property
    def cancel_requested(self) -> bool:
        """Someone asked (in the dashboard) for this run to stop: finish("cancelled")."""
        return bool(self._transport and self._transport.cancel_requested)

    def finish(self, status: str = "succeeded", error: str | None = None, *,
               timeout: float = 30.0) -> None:
        """End the run: send what is left (waiting at most `timeout` s) and its status.
        If the server stays away, everything stays in the spool and `landscope sync` sends
        it later; a second finish does nothing."""
        if status not in FINISH_STATUSES:
            raise ValueError(f"status must be one of {FINISH_STATUSES}, got {status!r}")
        if self.status != "running":
            return
        self._wall_point(self.last_step)  # the run's length, at its last step
        self.status = status
        _live_runs.discard(self)
        error = _storable(error)
        record = {"status": status, "error": error, "step": self.last_step}
        if self._offline is not None:
            self._offline.finish(record)
            return
        t = self._transport
        assert t is not None
        if t.down:
            print(f"landscope: {t.api.server} is not answering; waiting up to {timeout:g} s "
                  "for it (Ctrl-C: stop waiting, nothing is lost)", file=sys.stderr, flush=True)
        try:
            done = t.close(timeout)
        except KeyboardInterrupt:  # the user stopped waiting: everything is in the spool
            done = t.close(0.0)
        if done and t.error is None:
            try:
                t.api.finish(t.run_id, status, error, self.last_step)
            except SdkError as exc:
                t.spool.write_finish(record)
                _tell(f"the run's end could not be reported ({exc})", t.spool.path)
            else:
                t.spool.remove_if_done()
                return
        else:
            t.spool.write_finish(record)
            left = t.spool.pending_points()
            why = t.error or f"{t.api.server} did not take them within {timeout:g} s"
            _tell(f"{left} points are not on the server yet ({why})", t.spool.path)
        # run.api stays open: landscope.analyse(..., run=run) may upload after the end.

    def __enter__(self) -> Run:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc is None:
            self.finish()
        elif isinstance(exc, KeyboardInterrupt):
            self.finish("cancelled", error="KeyboardInterrupt")
        else:
            self.finish("failed", error=repr(exc))

    def __repr__(self) -> str:
        where = f"id={self.id}" if self.online else f"dir={str(self.dir)!r}"
        return f"<landscope.Run {self.name!r} {where} {self.status}>"


def _tell(what: str, spool: Path) -> None:
    print(f"landscope: {what}; everything is kept in {spool}: send it with "
          f"`landscope sync {spool}`.", file=sys.stderr, flush=True)


MAX_ERROR_CHARS = 20_000  # the server's runs.error


def _storable(error: str | None) -> str | None:
    """An error text the server will take (a refused finish would stay in the spool forever):
    at most MAX_ERROR_CHARS, no NUL, no lone surrogates."""
    if error is None:
        return None
    text = str(error).replace("\x00", "\\x00").encode("utf-8", "backslashreplace").decode()
    return text if len(text) <= MAX_ERROR_CHARS else text[: MAX_ERROR_CHARS - 1] + "…"


# Runs the script never finished: an uncaught exception fails them, a normal exit succeeds
# them (their points are sent first, as with finish()).
_live_runs: set[Run] = set()  # strong: a run the script dropped unfinished still ends
_uncaught: list[BaseException] = []
_hooked = False


def _watch_exit() -> None:
    """Installed by the first init(), not at import: importing the SDK changes nothing."""
    global _hooked
    if _hooked:
        return
    _hooked = True
    previous = sys.excepthook

    def excepthook(exc_type, exc, tb) -> None:
        _uncaught.append(exc)
        previous(exc_type, exc, tb)

    sys.excepthook = excepthook
    atexit.register(_finish_at_exit)


def _finish_at_exit() -> None:
    for run in list(_live_runs):
        if run._pid != os.getpid():  # a forked child exiting: the run is its parent's
            continue
        if _uncaught:
            run.finish("failed", error=repr(_uncaught[-1]))
        else:
            run.finish()


def run_environment() -> dict[str, Any]:
    """What changes this process's numbers (worker/engine/environment.py), as the run's
    environment: torch's threads and determinism switches as they are now, the default
    dtype, the first CUDA device if torch uses one. torch is not imported for it: a loop
    that has not imported torch gets the machine and versions only."""
    from worker.engine.environment import environment

    torch = sys.modules.get("torch")
    device = "cpu"
    if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
        device = f"cuda:{torch.cuda.current_device()}"
    return environment(device)


def _sizes(**sizes: int | None) -> dict[str, int]:
    """The x-axis sizes given (positive ints), for the create request and run.json."""
    out = {}
    for field, value in sizes.items():
        if value is None:
            continue
        if type(value) is not int or value < 1:
            raise ValueError(f"{field} must be a positive int, got {value!r}")
        out[field] = value
    return out


def _token(token: str | None) -> str | None:
    if token is not None:
        return token
    from server.settings import get_settings  # the one reader of LANDSCOPE_* (API_TOKEN)

    secret = get_settings().api_token
    return secret.get_secret_value() if secret is not None else None


def init(server: str | None = None, token: str | None = None, experiment: str | None = None,
         name: str | None = None, config: Any = None, dir: str | Path | None = None, *,
         total: int | None = None, transport: TransportOptions | None = None,
         batch_size: int | None = None, train_size: int | None = None) -> Run:
    """Start a run. `server`: record it there (its spool in dir/spool/<client_id>, or
    ~/.cache/landscope/spool/<client_id>); no server but `dir`: write it to `dir`, to be
    uploaded later with `landscope sync DIR`. `total`: steps planned (progress and ETA).
    `batch_size` (samples per step; None: full batch) and `train_size` (samples in an epoch)
    let the dashboard draw against epochs and samples seen.
    Raises ValueError for bad arguments, SdkError subclasses when the server cannot be
    reached (ServerUnreachable) or refuses the token (AuthError) or the run (Rejected)."""
    if server is None and dir is None:
        raise ValueError("landscope.init needs server=URL (record the run on a Landscope "
                         "server) or dir=PATH (write it to a directory; `landscope sync "
                         "PATH` uploads it later)")
    if total is not None and (type(total) is not int or total < 0):
        raise ValueError(f"total must be a non-negative int (steps planned), got {total!r}")
    sizes = _sizes(batch_size=batch_size, train_size=train_size)
    client_id = uuid.uuid4().hex
    cfg = as_config(config)
    env = run_environment()
    _watch_exit()
    name = as_name(name or f"{Path(sys.argv[0]).stem or 'run'}-{client_id[:6]}", "name")
    if experiment is not None:
        as_name(experiment, "experiment")
    if server is None:
        writer = OfflineWriter.create(Path(dir), client_id=client_id, name=name,  # type: ignore
                                      experiment=experiment, config=cfg, total=total,
                                      environment=env, **sizes)
        return Run(client_id=client_id, name=name, experiment=experiment, config=cfg,
                   total=total, offline=writer)
    api = Api(server, _token(token))
    payload = {"client_id": client_id, "experiment": experiment, "name": name, "config": cfg,
               "total": total, "environment": env, **sizes}
    try:
        created = api.create_run(payload)
    except ServerUnreachable as exc:
        api.close()
        raise ServerUnreachable(f"{exc}. Is `landscope up` running there? To train without "
                                "a server, pass dir=PATH and `landscope sync PATH` later"
                                ) from None
    except SdkError:
        api.close()
        raise
    # One spool per run (dir/spool/<client_id>): a second run in the same dir never mixes
    # its batches with the first one's leftovers.
    spool = Spool((Path(dir) / "spool" if dir is not None else default_root()) / client_id)
    spool.write_meta({"server": api.server, "run_id": created["id"], "create": payload})
    t = HttpTransport(api, created["id"], spool, transport)
    return Run(id=created["id"], client_id=client_id, name=name, experiment=experiment,
               config=cfg, total=total, transport=t)
