"""Landscope's worker: the Celery app and tasks, the SQL metric sink, heartbeats (worker/*.py),
and the pure-PyTorch engine they drive (worker.engine: models, norms, data, trainer, probes,
geometry analyses). The `landscope` command that starts a worker lives in landscope.cli."""
