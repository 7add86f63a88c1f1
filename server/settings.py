"""The one place that reads the environment: every setting is LANDSCOPE_<NAME>."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LANDSCOPE_", extra="ignore")

    data_dir: Path = Field(
        default_factory=lambda: Path.home() / ".landscope",
        description="datasets (cifar-10-python.tar.gz), the default SQLite file, checkpoints",
    )


@lru_cache
def get_settings() -> Settings:
    return Settings()
