"""Tags and a note on a run or an experiment: the PATCH body and the one rule for a tag.

A tag is 1-64 characters of letters, digits and `_ . : + = @ -` (any script's letters and
digits): no spaces, commas or slashes, so a tag travels unquoted in a path
(/runs/1/tags/lr=0.1), a repeated query parameter and the dashboard's comma-separated field.
Tags are kept as given (case included) and deduplicated; an object has at most 32.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from server.text import check_text

MAX_TAGS = 32
MAX_TAG_CHARS = 64  # = server/db/models.py TAG_CHARS
MAX_NOTE_CHARS = 10_000
_TAG = re.compile(r"[\w.:+=@-]+")


def tag_problem(tag: str) -> str | None:
    """Why `tag` is not a tag, or None when it is."""
    if not 1 <= len(tag) <= MAX_TAG_CHARS:
        return f"a tag has 1 to {MAX_TAG_CHARS} characters"
    if not _TAG.fullmatch(tag) or not tag.isprintable():
        return "a tag has only letters, digits and _ . : + = @ - (no spaces, commas or slashes)"
    return None


def check_tag(v: str) -> str:
    if problem := tag_problem(v):
        raise ValueError(problem)
    return v


def dedupe_tags(tags: list[str]) -> list[str]:
    """The tags once each, first spelling first; at most MAX_TAGS of them."""
    out = list(dict.fromkeys(tags))
    if len(out) > MAX_TAGS:
        raise ValueError(f"at most {MAX_TAGS} tags (got {len(out)} different ones)")
    return out


Tag = Annotated[str, AfterValidator(check_tag)]
# The raw list is bounded before deduplication so a huge body costs nothing to refuse.
TagList = Annotated[list[Tag], Field(max_length=4 * MAX_TAGS), AfterValidator(dedupe_tags)]


def _note(v: str | None) -> str | None:
    # An empty or blank note is no note: stored as NULL, as a cleared one.
    if v is None or not v.strip():
        return None
    return check_text(v)


class AnnotationPatch(BaseModel):
    """What to change; a field left out stays as it is. `tags` replaces the whole set (null:
    none); `note`: null (or blank) clears it."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"tags": ["baseline", "lr=0.1"], "note": "diverges"}]},
    )

    tags: TagList | None = Field(None, description=f"at most {MAX_TAGS}, each 1-{MAX_TAG_CHARS} "
                                 "characters of letters, digits and _ . : + = @ -")
    note: Annotated[str | None, Field(max_length=MAX_NOTE_CHARS), AfterValidator(_note)] = None

    def changes(self) -> dict[str, Any]:
        """Only the fields the request named (a null note clears; absent leaves it)."""
        out = {k: getattr(self, k) for k in self.model_fields_set}
        if "tags" in out and out["tags"] is None:
            out["tags"] = []
        return out

