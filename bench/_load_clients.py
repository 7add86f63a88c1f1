"""bench/bench_load.py's load generator: dashboard clients polling as the compare page does
(its docstring says how), run in their own process, one result dict back."""

from __future__ import annotations

import asyncio
import math
import time

# What the dashboard's compare page asks for (webapp/figures METRIC_KEYS, webapp/compare/data).
METRIC_KEYS = "train/*,test/*,landscape/*,ics/*,sharpness/*,grad/*,dist/*"
FIRST_MAX_POINTS = 300
LIVE_MAX_POINTS = 1_000_000
RUN_EVERY = 5  # GET /runs/{id} every this many polls
TIMEOUT_S = 30.0


def loadgen_main(base: str, run_ids: list[int], clients: int, seconds: float, think: float,
                 rate: float, ready, go, out) -> None:
    """Runs in its own process: the clients, then one result dict on `out`."""
    out.put(asyncio.run(_load(base, run_ids, clients, seconds, think, rate, ready, go)))


async def _baseline(http, run_id: int, back: int, reps: int = 20) -> dict[str, list[float]]:
    """One client alone (the writers running): sequential requests, seconds each. A live poll
    asks for the last `back` steps, about what one think time of writing adds."""
    out: dict[str, list[float]] = {"metrics, since_step": [], "run": []}
    r = await http.get(f"/api/v1/runs/{run_id}/metrics",
                       params={"keys": METRIC_KEYS, "max_points": FIRST_MAX_POINTS})
    r.raise_for_status()
    last = max(math.floor(s["steps"][-1]) for s in r.json()["series"].values() if s["steps"])
    for _ in range(reps):
        t0 = time.perf_counter()
        r = await http.get(f"/api/v1/runs/{run_id}/metrics", params={
            "keys": METRIC_KEYS, "max_points": LIVE_MAX_POINTS, "since_step": last - back})
        r.raise_for_status()
        out["metrics, since_step"].append(time.perf_counter() - t0)
        last = max(math.floor(s["steps"][-1]) for s in r.json()["series"].values()
                   if s["steps"])
        t0 = time.perf_counter()
        (await http.get(f"/api/v1/runs/{run_id}")).raise_for_status()
        out["run"].append(time.perf_counter() - t0)
        await asyncio.sleep(0.05)
    return out


async def _load(base, run_ids, clients, seconds, think, rate, ready, go) -> dict:
    import httpx

    samples: list[tuple] = []  # (kind, start offset s, latency s, status, bytes, points)
    errors: list[str] = []
    late: list[float] = []  # how late a poll started against its schedule (a slow answer)
    skipped = [0]  # scheduled polls not made: the client's previous one was still waiting
    scheduled = [0]
    lags: list[float] = []
    # Every client exists before the clock starts (httpx builds an SSL context per client:
    # ~50 of them would stall the event loop in the first second). Each connects at its first
    # poll, as a page does; connecting earlier would leave connections idle past uvicorn's
    # 5 s keep-alive, and a request racing the server's close fails.
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    https = [httpx.AsyncClient(base_url=base, timeout=TIMEOUT_S, limits=limits)
             for _ in range(clients)]
    baseline = await _baseline(https[0], run_ids[0], int(rate * think))
    ready.set()
    await asyncio.get_running_loop().run_in_executor(None, go.wait)
    t_begin = time.perf_counter()
    t_end = t_begin + seconds
    done = asyncio.Event()

    async def ticker() -> None:
        while not done.is_set():
            t = time.perf_counter()
            await asyncio.sleep(0.02)
            lags.append(time.perf_counter() - t - 0.02)

    async def request(http, kind: str, path: str, params: dict | None):
        t0 = time.perf_counter()
        try:
            r = await http.get(path, params=params)
        except httpx.HTTPError as exc:
            t1 = time.perf_counter()
            samples.append((kind, t0 - t_begin, t1 - t0, 0, 0, 0))
            errors.append(f"{kind}: {type(exc).__name__}: {exc}"[:300])
            return None
        t1 = time.perf_counter()
        body = None
        if r.status_code < 300:
            try:
                body = r.json()
            except ValueError:
                errors.append(f"{kind}: {r.status_code} but not JSON")
        else:
            errors.append(f"{kind}: HTTP {r.status_code}: {r.text[:200]}")
        points = 0
        if body is not None and kind.startswith("metrics"):
            if not isinstance(body.get("series"), dict):
                errors.append(f"{kind}: no series in the answer")
                body = None
            else:
                points = sum(len(s["steps"]) for s in body["series"].values())
        samples.append((kind, t0 - t_begin, t1 - t0, r.status_code, len(r.content), points))
        return body

    async def client(i: int) -> None:
        http = https[i]
        rid = run_ids[i % len(run_ids)]
        cursor: dict[str, int] = {}  # key -> last step seen (the dashboard's Cursor.keys)
        first = t_begin + think * i / clients
        k = polls = 0
        ticks = math.ceil((t_end - first) / think)  # this client's scheduled polls
        scheduled[0] += ticks
        while True:
            tick = first + k * think
            now = time.perf_counter()
            if tick <= now:  # the previous answer took longer than the think time
                # A page's timer does not catch up: the ticks missed are skipped.
                skip = min(int((now - tick) // think), ticks - k)
                k += skip
                skipped[0] += skip
                tick += skip * think
                late.append(now - tick)
            if tick >= t_end:
                break
            if tick > now:
                await asyncio.sleep(tick - now)
            if not cursor:
                kind = "metrics, first (downsampled)"
                params = {"keys": METRIC_KEYS, "max_points": FIRST_MAX_POINTS}
            else:
                kind = "metrics, since_step"
                params = {"keys": METRIC_KEYS, "max_points": LIVE_MAX_POINTS,
                          "since_step": min(cursor.values()) + 1}
            body = await request(http, kind, f"/api/v1/runs/{rid}/metrics", params)
            if body is not None:
                for key, s in body["series"].items():
                    if s["steps"]:
                        cursor[key] = max(cursor.get(key, -1), math.floor(s["steps"][-1]))
            if polls % RUN_EVERY == RUN_EVERY - 1:
                await request(http, "run", f"/api/v1/runs/{rid}", None)
            k += 1
            polls += 1

    tick_task = asyncio.create_task(ticker())
    await asyncio.gather(*(client(i) for i in range(clients)))
    wall = time.perf_counter() - t_begin
    done.set()
    await tick_task
    for h in https:
        await h.aclose()
    return {"samples": samples, "errors": errors, "late": late, "lags": lags, "wall_s": wall,
            "skipped": skipped[0], "scheduled": scheduled[0],
            "baseline": baseline}


