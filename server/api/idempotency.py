"""The Idempotency-Key header of the POSTs that create runs, and how a replay answers.

The key's storage and checks live in server/services/admission.py; this is only the edge.
"""

from __future__ import annotations

from typing import Annotated, TypeVar

from fastapi import Header, Response
from sqlalchemy.orm import Session

from server.api import responses

T = TypeVar("T")
REPLAYED = "Idempotent-Replayed"

IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=255,
        pattern=r"^[\x21-\x7e]+$",
        description="any unique string of 1 to 255 visible ASCII characters (no spaces), "
        "e.g. a UUID: a retry with the same key and body within 24 h answers with what the "
        "first request created, and creates nothing; the same key with another body is a 422",
    ),
]

# For the routes' `responses`: the header a replayed answer carries, and the replay's 409.
REPLAY_RESPONSES = {
    201: {"headers": {REPLAYED: {
        "description": "true when the answer repeats an earlier request's (same "
        "Idempotency-Key): nothing was created",
        "schema": {"type": "string", "enum": ["true"]},
    }}},
    409: {**responses.CONFLICT[409], "description": "what the Idempotency-Key created has "
          "since been deleted: there is nothing to answer with again"},
}


def replay(session: Session, response: Response, answer: T) -> T:
    """`answer`, marked as a replay. Ends the transaction, which wrote nothing, so that its
    admission lock is released now rather than when the request's session closes."""
    session.rollback()
    response.headers[REPLAYED] = "true"
    return answer
