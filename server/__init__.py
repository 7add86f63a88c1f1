"""Landscope server: settings, run specs, presets (and, later, the database and the REST API).

Nothing in this package imports torch: the worker imports the run spec from here, never the
other way round.
"""
