"""The declarative base and the column types every table uses: UTC datetimes, floats that
keep NaN, and the (value, flag) encoding of non-finite metric values."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    DateTime,
    Float,
    MetaData,
    TypeDecorator,
)
from sqlalchemy.orm import DeclarativeBase

# Point.flag values.
FINITE, NAN, POS_INF, NEG_INF = 0, 1, 2, 3


def encode_value(v: float) -> tuple[float | None, int]:
    """(value, flag) as stored in metric_points."""
    if math.isfinite(v):
        return v, FINITE
    if math.isnan(v):
        return None, NAN
    return None, POS_INF if v > 0 else NEG_INF


def decode_value(value: float | None, flag: int) -> float:
    if flag == FINITE:
        return float(value)  # type: ignore[arg-type]
    return {NAN: math.nan, POS_INF: math.inf, NEG_INF: -math.inf}[flag]


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator):
    """Timezone-aware UTC datetimes on both backends (SQLite hands back naive ones)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value


class Real(TypeDecorator):
    """A float column that keeps NaN: SQLite stores NaN as NULL, so NULL reads back as NaN."""

    impl = Float
    cache_ok = True

    def process_result_value(self, value: float | None, dialect: Any) -> float:
        return math.nan if value is None else value


naming = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=naming)
    type_annotation_map = {datetime: UTCDateTime(), dict[str, Any]: JSON, list[Any]: JSON}
