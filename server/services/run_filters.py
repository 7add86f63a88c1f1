"""The runs listing's filters, as SQL: status, experiment, source, what the spec says
(normalisation, model, dataset) and tags.

Spec fields are read with JSON path expressions (`spec ->> 'norm'` on PostgreSQL,
json_extract on SQLite; SQLAlchemy writes either from `Run.spec["norm"].as_string()`) rather
than from columns copied out of the spec: the runs table is small (a lab's thousands of rows,
next to millions of metric points) and a listing reads its rows anyway, while copied columns
would be a second truth that every writer (a service run's creation, landscope.init, and a
backfill in the migration) must keep in step. An SDK run has no spec; what its loop reported in
`config` under the same top-level key counts instead, so an SDK run that logged
{"norm": "batch"} is found with the service runs of BatchNorm.
Tags: every tag asked for must be on the run (EXISTS on the (tag, run_id) index, per tag).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from sqlalchemy import Select, exists, func, or_, select

from server.db.models import Experiment, ExperimentTag, Run, RunTag

SPEC_FILTERS = ("norm", "model", "dataset")


@dataclass(frozen=True)
class RunFilters:
    status: str | None = None
    experiment_id: int | None = None
    name: str | None = None
    source: str | None = None
    norm: str | None = None
    model: str | None = None
    dataset: str | None = None
    tags: Sequence[str] = field(default_factory=tuple)

    def apply(self, stmt: Select) -> Select:
        if self.status is not None:
            stmt = stmt.where(Run.status == self.status)
        if self.experiment_id is not None:
            stmt = stmt.where(Run.experiment_id == self.experiment_id)
        if self.name:
            # lower() on both sides: LIKE is case-blind on SQLite but not on PostgreSQL.
            stmt = stmt.where(func.lower(Run.name).contains(self.name.lower(), autoescape=True))
        if self.source is not None:
            stmt = stmt.where(Run.source == self.source)
        for key in SPEC_FILTERS:
            if (value := getattr(self, key)) is not None:
                stmt = stmt.where(or_(Run.spec[key].as_string() == value,
                                      Run.config[key].as_string() == value))
        for tag in self.tags:
            stmt = stmt.where(exists(select(RunTag.run_id).where(
                RunTag.tag == tag, RunTag.run_id == Run.id)))
        return stmt


def with_experiment_tags(stmt: Select, tags: Sequence[str]) -> Select:
    """Experiments carrying every one of `tags`."""
    for tag in tags:
        stmt = stmt.where(exists(select(ExperimentTag.experiment_id).where(
            ExperimentTag.tag == tag, ExperimentTag.experiment_id == Experiment.id)))
    return stmt
