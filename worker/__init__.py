"""Landscope worker: the Celery side (later) and the pure-PyTorch engine (worker.engine)."""
