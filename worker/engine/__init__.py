"""The experiment engine: pure PyTorch. Models, normalisations, data, the training loop, probes.

It knows nothing of HTTP, Celery or SQL: it takes a RunSpec, a device, a MetricSink, a
should_stop callback and a checkpoint store, so a CLI drives it just as well as a worker.
Entry point: worker.engine.trainer.Trainer (or train()).
"""
