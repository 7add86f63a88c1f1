"""Response shapes of GET /api/v1/plugins (server/services/plugins.py)."""

from __future__ import annotations

from pydantic import BaseModel, Field


class PluginWorker(BaseModel):
    name: str = Field(description="the worker")
    distribution: str = Field(description="the installed distribution and its version")


class PluginOffer(BaseModel):
    workers: list[PluginWorker]
    queues: list[str] = Field(description="queues those workers consume: a run must go to one")


class PluginsOut(BaseModel):
    """Plug-in models and datasets that online workers have installed (entry-point groups
    landscope.models and landscope.datasets), by the name a run spec gives as `model` or
    `dataset`. A spec naming any other plug-in is refused."""

    models: dict[str, PluginOffer]
    datasets: dict[str, PluginOffer]
    problems: list[str] = Field(
        description="entry points workers ignore: a built-in's name, an invalid name, or one "
        "name from several distributions")
