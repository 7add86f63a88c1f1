"""The SDK for a user's own training loop: `landscope.init` (run.py) sends a run's metrics to a
server through a background transport (transport.py) that spools to disk while the server is
away (spool.py), or writes them to a directory with no server at all (offline.py); the probes
(probes.py) and in-process analyses (analyse.py) are the engine's own classes.

Inside the transport: values.py (what run.log accepts, checked on the caller's thread),
wire.py (the ingest body, built and gzipped off it), api.py (the HTTP calls and what their
failures mean), sync.py (uploading offline folders and spools: `landscope sync`).

Nothing here is imported by `import landscope` until a name is touched (landscope/__init__.py).
"""
