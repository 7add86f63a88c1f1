"""Landscope's public face: the SDK for a user's own training loop, the notebook client and
the `landscope` command.

    import landscope
    run = landscope.init(server="http://127.0.0.1:8000", experiment="sweep", name="bn")
    probes = landscope.Probes(model, loss_fn, optimizer, run=run, landscape={"every": 20})
    landscope.analyse(model, loss_fn, (x, y), kind="surface", run=run)
    client = landscope.Client("http://127.0.0.1:8000")

- landscope.sdk: init/Run (metrics to a server through a background transport with an on-disk
  spool, or to a directory offline), Probes and analyse (the engine's own classes, in-process);
- landscope.client: Client, the server's experiments, runs and metrics as pandas frames;
- landscope.cli: the `landscope` command (train, sync, up, api, worker, ...).
It rests on the engine (worker.engine, pure PyTorch) and talks to a server over HTTP. The worker
(Celery tasks, SQL sink) stays in worker/, the API and database in server/, the dashboard in
webapp/.

`import landscope` imports nothing heavy: each name below is imported when first touched
(module __getattr__), so the CLI does not pay for torch when it does not need it, and a part
that fails to import fails only when it is used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "init": "landscope.sdk.run",
    "Run": "landscope.sdk.run",
    "Probes": "landscope.sdk.probes",
    "analyse": "landscope.sdk.analyse",
    "Client": "landscope.client",
    "LandscopeError": "landscope.client",
}

# = _EXPORTS, spelt out for tools
__all__ = ["Client", "LandscopeError", "Probes", "Run", "analyse", "init"]

if TYPE_CHECKING:  # for editors and type checkers only
    from landscope.client import Client, LandscopeError
    from landscope.sdk.analyse import analyse
    from landscope.sdk.probes import Probes
    from landscope.sdk.run import Run, init


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'landscope' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # once imported, a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
