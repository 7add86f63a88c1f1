"""Landscope worker: the Celery side (later) and the pure-PyTorch experiment engine (worker.engine)."""
