"""What text the API stores: no NUL characters and no lone surrogates.

PostgreSQL's text and JSON types cannot hold U+0000, and a lone surrogate ("\\ud800", which
JSON's \\u escapes can spell) is not a character at all: it cannot be encoded as UTF-8, so no
database, log line or JSON answer can carry it. Both are refused at the request's edge, with a
422 naming the field, instead of failing later in the driver or the response encoder.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import AfterValidator

_BAD = re.compile("[\x00\ud800-\udfff]")


def text_problem(s: str) -> str | None:
    """Why `s` cannot be stored, or None when it can."""
    m = _BAD.search(s)
    if m is None:
        return None
    if m.group() == "\x00":
        return "must not contain NUL (U+0000) characters"
    return "must not contain lone surrogates (U+D800 to U+DFFF): they are not characters"


def check_text(v: Any) -> Any:
    """A pydantic after-validator: strings must be storable; anything else passes through."""
    if isinstance(v, str) and (problem := text_problem(v)):
        raise ValueError(problem)
    return v


# A string (or None) that can be stored: for request fields and query parameters.
StoredText = Annotated[str, AfterValidator(check_text)]
