"""Query and path parameters of tags and of the runs listing's spec filters."""

from __future__ import annotations

from typing import Annotated

from fastapi import Path, Query
from pydantic import AfterValidator

from server.schemas_annotations import MAX_TAG_CHARS, MAX_TAGS, Tag, check_tag
from server.text import check_text

# A filter value is compared, never stored: bounded, and free of what PostgreSQL cannot
# take even in a comparison (NUL).
TagPath = Annotated[str, Path(max_length=4 * MAX_TAG_CHARS), AfterValidator(check_tag)]
TagQuery = Annotated[list[Tag] | None, Query(max_length=MAX_TAGS,
                                             description="repeat for runs with every one")]
SpecValue = Annotated[str | None, Query(max_length=200), AfterValidator(check_text)]
