"""Tags and notes on runs and experiments: the user's own words, changed at any status.

Each change first locks the owner's row (PostgreSQL) or the database (SQLite), so two requests
that change the same object's tags apply one after the other instead of both inserting the
same (owner, tag) row (tests/server/test_api_tags_notes.py sends them at once). The owner may
be running: a worker or an SDK batch writing it at the same time touches other columns, and
its conditional UPDATEs do not read the tags or the note.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from server.db.models import Experiment, ExperimentTag, Run, RunTag
from server.schemas_annotations import MAX_TAGS
from server.services.errors import InvalidRequest, NotFound

Owner = Run | Experiment
_TAG_MODEL = {Run: RunTag, Experiment: ExperimentTag}
_WHAT = {Run: "run", Experiment: "experiment"}


def _locked(session: Session, model: type[Owner], owner_id: int) -> Any:
    if session.get_bind().dialect.name == "sqlite":
        # The driver opens SQLite's transaction at the first write, and a SELECT locks
        # nothing: a no-op UPDATE first takes the database's write lock (waiting up to the
        # busy timeout), so the tags read next are the ones this request replaces.
        session.execute(update(model).where(model.id == owner_id).values(note=model.note))
    else:
        # FOR NO KEY UPDATE, not FOR UPDATE: an SDK batch being stored holds a key-share lock
        # on its run (server/services/sdk_runs.py) and need not wait for a tag, nor it for one.
        session.execute(select(model.id).where(model.id == owner_id)
                        .with_for_update(key_share=True))
    owner = session.get(model, owner_id)
    if owner is None:
        raise NotFound(_WHAT[model], owner_id)
    return owner


def _set_tags(owner: Owner, tags: list[str]) -> None:
    model = _TAG_MODEL[type(owner)]
    keep = [r for r in owner.tag_rows if r.tag in tags]
    have = {r.tag for r in keep}
    # The rows removed from the collection are deleted (delete-orphan); kept ones untouched.
    owner.tag_rows = keep + [model(tag=t) for t in tags if t not in have]


def annotate(session: Session, model: type[Owner], owner_id: int,
             changes: dict[str, Any]) -> Any:
    """Apply an AnnotationPatch's changes (validated: tags deduplicated and bounded)."""
    owner = _locked(session, model, owner_id)
    if "tags" in changes:
        _set_tags(owner, changes["tags"])
    if "note" in changes:
        owner.note = changes["note"]
    session.flush()
    return owner


def add_tag(session: Session, model: type[Owner], owner_id: int, tag: str) -> Any:
    """Add one tag (validated); adding one it has already changes nothing."""
    owner = _locked(session, model, owner_id)
    tags = owner.tags
    if tag not in tags:
        if len(tags) >= MAX_TAGS:
            raise InvalidRequest(("path", "tag"),
                                f"this {_WHAT[model]} has {MAX_TAGS} tags already, the most it "
                                "may have; remove one first")
        _set_tags(owner, [*tags, tag])
        session.flush()
    return owner


def remove_tag(session: Session, model: type[Owner], owner_id: int, tag: str) -> Any:
    """Remove one tag; removing one it does not have changes nothing."""
    owner = _locked(session, model, owner_id)
    _set_tags(owner, [t for t in owner.tags if t != tag])
    session.flush()
    return owner
