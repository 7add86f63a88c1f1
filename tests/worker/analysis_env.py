"""What the analysis task tests share: the run they train (RUN), the surface they compute
(SURFACE), Env (a migrated database, a data directory and the settings a worker would have, with
the in-process reference an analysis must equal) and its `env` fixture, and the comparison of
stored points with that reference.

The run is trained by the worker's own runner (execute_run), so its snapshots are the files
and rows a deployment has; analyses are created by the API's service, as a request would.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select

from server.analysis_spec import AnalysisSpec
from server.db.migrate import upgrade
from server.db.models import Analysis, AnalysisPoint, AnalysisValue
from server.db.session import make_engine, make_sessionmaker
from server.schemas_analyses import AnalysisCreate
from server.services import analyses
from server.settings import Settings
from server.spec import build_spec
from worker.engine.geometry.job import AnalysisJob
from worker.engine.geometry.sink import MemoryAnalysisSink
from worker.engine.snapshots import DirectorySnapshotStore
from worker.runner import execute_run
from worker.snapshot_index import snapshot_dir

# A small BN classifier on digits (no download): every BN mode matters, accuracy is measured.
RUN = {"model": "mlp", "depth": 3, "width": 16, "norm": "batch", "dataset": "digits",
       "lr": 0.3, "batch_size": 32, "steps": 30, "eval_every": 0, "device": "cpu",
       "snapshots": {"every": 10}, "probes": {"landscape": {"every": 0}}}
SURFACE = {"kind": "surface", "x": {"points": 5}, "y": {"lo": -0.5, "hi": 0.5, "points": 4},
           "eval_samples": 128, "batch_size": 64, "chunk_points": 8,
           "directions": {"seed": 11}}


class Env:
    """A migrated database, a data directory and the settings a worker would have."""

    def __init__(self, tmp_path: Path, db_url: str, **broker) -> None:
        upgrade(db_url)
        self.url = db_url
        self.engine = make_engine(db_url)
        self.factory = make_sessionmaker(self.engine)
        self.settings = Settings(_env_file=None, data_dir=tmp_path, database_url=db_url,
                                 heartbeat_seconds=0.2, **broker)

    def train(self, make_run, **changes) -> int:
        spec = build_spec({**RUN, **changes})
        run_id = make_run(self.url, spec)
        outcome = execute_run(run_id, settings=self.settings, engine=self.engine,
                              worker="test", device="cpu")
        assert outcome == "succeeded"
        return run_id

    def create(self, run_id: int, **spec) -> Analysis:
        with self.factory() as s:
            rows, _cost, created = analyses.create_analyses(
                s, self.settings, AnalysisCreate(run_id=run_id, spec=AnalysisSpec(**spec)))
            s.commit()
            assert created
            return rows[0]

    def analysis(self, analysis_id: int) -> Analysis:
        with self.factory() as s:
            return s.get(Analysis, analysis_id)

    def points(self, analysis_id: int) -> dict[tuple[int, int], tuple]:
        """(step, index) -> (loss, acc, test_loss, test_acc); no test loss without a test set
        (the column reads NULL back as NaN, as the API knows)."""
        with self.factory() as s:
            test = s.get(Analysis, analysis_id).spec["test_set"]
            rows = s.execute(select(AnalysisPoint).where(
                AnalysisPoint.analysis_id == analysis_id)).scalars().all()
        return {(p.step, p.idx): (p.loss, p.acc, p.test_loss if test else None, p.test_acc)
                for p in rows}

    def values(self, analysis_id: int) -> dict[tuple[int, str], object]:
        with self.factory() as s:
            rows = s.execute(select(AnalysisValue).where(
                AnalysisValue.analysis_id == analysis_id)).scalars().all()
        return {(v.step, v.name): v.value for v in rows}

    def reference(self, run_id: int, spec: dict) -> MemoryAnalysisSink:
        """The same analysis in this process, in one go (the CLI's way)."""
        a = self.analysis_spec(run_id, spec)
        sink = MemoryAnalysisSink()
        job = AnalysisJob(build_spec(RUN), a, self.settings.data_dir,
                          DirectorySnapshotStore(snapshot_dir(self.settings, run_id)), "cpu")
        assert job.run_all(sink)
        return sink

    @staticmethod
    def analysis_spec(run_id: int, spec: dict) -> AnalysisSpec:
        steps = spec.get("steps") or [RUN["steps"]]
        return AnalysisSpec.model_validate({**spec, "steps": steps})

    def close(self) -> None:
        self.engine.dispose()


@pytest.fixture(name="env")
def env_fixture(tmp_path, sqlite_url):
    """An Env on a fresh SQLite database (imported as env_fixture, taken as `env`)."""
    e = Env(tmp_path, sqlite_url)
    yield e
    e.close()


def as_points(sink: MemoryAnalysisSink) -> dict[tuple[int, int], tuple]:
    return {(step, i): (v.loss, v.acc, v.test_loss, v.test_acc)
            for step, grid in sink.grid.items() for i, v in grid.items()}


def same_points(got: dict, want: dict, rel: float = 0.0) -> None:
    """Equal (bit for bit when rel is 0; NaN equal to NaN), nothing more or less.

    Another process (a worker) may sum in another order: CPU kernels pick their threading by
    the machine's load, so its float32 sums can differ in the last bits, as
    test_celery_worker.py allows for runs (rel=1e-5)."""
    assert got.keys() == want.keys()
    for key, row in want.items():
        for a, b in zip(got[key], row, strict=True):
            same = a == b or (a != a and b != b) or (
                rel and a is not None and b is not None and a == pytest.approx(b, rel=rel))
            assert same, (key, got[key], row)
