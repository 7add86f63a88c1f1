"""The one place that reads the environment: every setting is LANDSCOPE_<NAME>.

With nothing set, everything lives under the data directory: a SQLite database and an
embedded broker (kombu's SQLAlchemy transport on a second SQLite file), so one command starts
the whole product. Real deployments point DATABASE_URL at PostgreSQL
(postgresql+psycopg://...) and BROKER_URL at Redis (redis://...).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LANDSCOPE_", extra="ignore")

    data_dir: Path = Field(
        default_factory=lambda: Path.home() / ".landscope",
        description="datasets (cifar-10-python.tar.gz), the default SQLite files, checkpoints",
    )
    database_url: str | None = Field(
        None, description="SQLAlchemy URL; default sqlite:///<data_dir>/landscope.db"
    )
    broker_url: str | None = Field(
        None, description="Celery broker URL; default sqla+sqlite:///<data_dir>/broker.db"
    )
    broker_key_prefix: str = Field(
        "", max_length=100, pattern=r"^[A-Za-z0-9_.:-]*$",
        description="Redis broker only: a prefix for every key the broker uses, so that "
        "deployments (or test runs) can share one Redis database; API and workers must agree",
    )
    api_token: SecretStr | None = Field(
        None, description="when set, mutating API requests need 'Authorization: Bearer <token>'"
    )
    protect_reads: bool = Field(
        False, description="with API_TOKEN: reads need the token too (GET /health stays open)"
    )
    cors_origins: str = Field(
        "", description="comma-separated origins whose browser pages may call the API; "
        "empty (the default): none, the dashboard is served from the API's own origin"
    )
    dev: bool = Field(
        False, description="development mode: Dash dev tools (error pop-ups, callback graph)"
    )
    access_log: bool = Field(
        False, description="log every HTTP request; off by default, since each open dashboard "
        "page polls once a second"
    )

    # Server-side limits: no request may exhaust a worker.
    max_steps: int = Field(200_000, ge=1, description="most training steps one run may ask for")
    max_width: int = Field(4096, ge=1, description="widest layer (units or channels) allowed")
    max_batch: int = Field(8192, ge=1, description="largest minibatch allowed")
    max_queued_runs: int = Field(200, ge=1, description="runs waiting at most, all together")
    max_runs_per_experiment: int = Field(64, ge=1, description="cross product size at most")
    # Limits on a run's estimated cost (server/cost.py), not its shape: every preset, the
    # paper's full-size VGG-16 included, stays well under them.
    max_params: int = Field(200_000_000, ge=1, description="model parameters per run at most")
    max_memory_mb: float = Field(
        16384, gt=0, description="estimated training memory per run (activations of a batch, "
        "weights, gradients, optimiser and probe state), MiB"
    )
    max_dataset_mb: float = Field(4096, gt=0, description="dataset held in memory, MiB")
    max_cost_steps: float = Field(
        20_000_000, gt=0, description="whole run in training-step units: steps x the probe "
        "floor, plus test evaluations"
    )
    # Limits on one analysis (server/analysis_cost.py): a 101 x 101 surface at four steps,
    # or a default spectrum at every one of 64 steps, fits.
    max_analysis_points: int = Field(
        50_000, ge=1, description="grid points of one analysis, all its steps together"
    )
    max_lanczos_steps: int = Field(
        50_000, ge=1, description="Hessian-vector products of one analysis, all its steps "
        "together (Lanczos, Hutchinson probes, stochastic Lanczos quadrature)"
    )
    max_analysis_memory_mb: float = Field(
        16384, gt=0, description="estimated memory of one analysis (a batch's activations for "
        "the points evaluated at once, weights, directions, the Lanczos basis, the dataset), MiB"
    )

    # Serving (`landscope up` / `landscope api`).
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    # Bounds on every request: none may hold the server, whatever the client or the database.
    max_body_bytes: int = Field(
        1_048_576, ge=1024, description="largest request body; larger ones get 413 unread"
    )
    request_timeout_seconds: float = Field(
        10.0, gt=0, description="a request not answering by then gets 503 (and never commits)"
    )
    db_statement_timeout_seconds: float = Field(
        5.0, gt=0, description="the API's longest SQL statement: PostgreSQL cancels it, a "
        "connection silent 1 s longer is cut; SQLite waits this long for a lock"
    )
    db_connect_timeout_seconds: int = Field(
        3, ge=2, description="the API's and workers' PostgreSQL connect timeout (libpq: >= 2)"
    )
    db_pool_timeout_seconds: float = Field(
        3.0, gt=0, description="the API's longest wait for a free pooled database connection"
    )
    health_budget_seconds: float = Field(
        1.5, gt=0, le=60, description="GET /health waits this long for each component's "
        "check (database, broker; both at once) before reporting it not answering (503)"
    )
    max_ingest_mb: float = Field(
        64, gt=0, description="POST /runs/{id}/ingest (SDK metric batches): largest body, "
        "MiB, and largest after gzip decompression (larger: 413)"
    )
    sdk_heartbeat_timeout_seconds: float = Field(
        60.0, gt=0, description="an SDK run silent this long is marked crashed (a heartbeat "
        "arriving later revives it)"
    )
    worker_db_statement_timeout_seconds: float = Field(
        60.0, gt=0, description="as DB_STATEMENT_TIMEOUT_SECONDS, for workers (bulk inserts)"
    )

    # Worker behaviour.
    worker_device: str = Field("auto", description="device of `landscope worker`: auto|cpu|cuda:N")
    torch_threads: int = Field(
        1, ge=0, le=1024, description="torch intra-op threads of a run whose spec sets no "
        "`threads` (`landscope worker`, `landscope train`, scripts/reproduce_figures.py); "
        "0 = every core the process may use. One by default: the count that reproduces a "
        "run's numbers on any machine (docs/engine.md, 'Threads')",
    )
    heartbeat_seconds: float = Field(2.0, gt=0, description="how often a worker touches its rows")
    sink_flush_seconds: float = Field(1.0, gt=0, description="metrics reach the DB this often")
    sink_flush_points: int = Field(20_000, ge=1, description="...or once this many are buffered")
    stale_seconds: float | None = Field(
        None, gt=0, description="a running run's worker counts as dead after this long silent"
    )
    db_outage_seconds: float = Field(
        120.0, ge=0, description="a worker retries database writes this long before failing"
    )
    reconcile_seconds: float = Field(
        15.0, gt=0, description="how often the API re-sends runs the broker lost"
    )

    @model_validator(mode="after")
    def _reads_need_a_token(self) -> Settings:
        if self.protect_reads and self.api_token is None:
            raise ValueError("LANDSCOPE_PROTECT_READS needs LANDSCOPE_API_TOKEN: "
                             "there is no token to protect reads with")
        return self

    @property
    def cors_origin_list(self) -> list[str]:
        return [o.strip() for o in self.cors_origins.split(",") if o.strip()]

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'landscope.db'}"

    @property
    def broker(self) -> str:
        return self.broker_url or f"sqla+sqlite:///{self.data_dir / 'broker.db'}"

    @property
    def checkpoint_dir(self) -> Path:
        return self.data_dir / "checkpoints"

    @property
    def stale_after_seconds(self) -> float:
        """Seconds without a heartbeat after which a running run's worker counts as dead:
        STALE_SECONDS if set, else ten missed beats and never under 30 s (a slow step or a
        database blip must not look like a death)."""
        return self.stale_seconds or max(30.0, 10 * self.heartbeat_seconds)

    @property
    def embedded_broker(self) -> bool:
        return self.broker.startswith("sqla+")


@lru_cache
def get_settings() -> Settings:
    return Settings()
