"""Landscope's public face: the `landscope` command (landscope.cli).

Everything a user imports or runs lives here; it rests on the engine (worker.engine, pure
PyTorch) and talks to a server over HTTP. The worker (Celery tasks, SQL sink) stays in worker/,
the API and database in server/, the dashboard in webapp/.
"""
