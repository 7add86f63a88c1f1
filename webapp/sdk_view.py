"""What the compare figures need to know of an SDK run, read from what it recorded.

A worker's run carries its RunSpec, and the figures read from it which probes ran (ICS
layers, histogram layers, the landscape schedule). An SDK run (landscope.init) has no spec:
its user's loop chose the probes. So the figures get a stand-in spec built from the run's
own data: its metric keys (ics/L3/l2 says layer 3 was probed), the layers of its activation
histograms, and its config for the legend (norm, lr) when the config names them.
"""

from __future__ import annotations

import math
import re
from typing import Any

from webapp.client import ApiClient

ICS_KEY = re.compile(r"^ics/L(\d+)/")
HIST_SAMPLE = 500  # histogram records read to learn the layers (every layer shows at step 0)


def stand_in_spec(run: dict[str, Any], keys: list[str], hist_layers: int) -> dict[str, Any]:
    """A spec-shaped dict for the figures (webapp/runsets.py) of an SDK run."""
    cfg = run.get("config") or {}
    ics = sorted({int(m.group(1)) for k in keys if (m := ICS_KEY.match(k))})
    spec: dict[str, Any] = {
        "model": "sdk",
        "norm": cfg["norm"] if isinstance(cfg.get("norm"), str) else "none",
        # Accuracy panels only when the loop logged an accuracy.
        "loss": "cross_entropy" if any(k.endswith("/acc") for k in keys) else "mse",
        "probes": {
            "ics": {"every": 1 if ics else 0, "layers": ics},
            # 0: the schedule is unknown, so Fig 11 reads every probed step it has.
            "landscape": {"every": 0, "multipliers": []},
            "activations": {"every": 1 if hist_layers else 0},
        },
        "depth": hist_layers + 1,  # runsets counts histogram layers as depth - 1
    }
    lr = cfg.get("lr")
    if isinstance(lr, int | float) and not isinstance(lr, bool) and math.isfinite(lr):
        spec["lr"] = float(lr)
    return spec


def describe(client: ApiClient, run: dict[str, Any]) -> dict[str, Any]:
    """`run` with its stand-in spec (SDK runs; any other run is returned as it is)."""
    if run.get("source") != "sdk":
        return run
    rid = run["id"]
    keys = client._request("GET", f"/runs/{rid}/keys")["keys"]
    hists = client._request("GET", f"/runs/{rid}/distributions",
                            params={"scope": "layer", "limit": HIST_SAMPLE})["records"]
    layers = max((int(h["layer"]) for h in hists), default=0)
    return {**run, "spec": stand_in_spec(run, keys, layers)}
