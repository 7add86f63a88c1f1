"""Which runs have a live message on the broker: the reconciler's view of the queue.

Live means waiting in a queue, or delivered to a worker and not yet acknowledged. Both
brokers Landscope supports are read directly, without consuming anything:
- Redis (kombu): each queue is a list (plus one list per priority step), and delivered but
  unacknowledged messages sit in the `unacked` hash, every key under the broker's key prefix
  (settings.broker_key_prefix, kombu's global_keyprefix);
- the embedded broker (kombu's SQLAlchemy transport): rows of kombu_message with visible set.
  That transport never makes a delivered message visible again, so a run whose worker died
  has no live message there: the reconciler must resend it.
For any other broker the answer is None: unknown, and the reconciler does not guess.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable

from sqlalchemy import text

from server.queue import QUEUES, RUN_TASK
from server.settings import Settings

# kombu's Redis transport keeps priority levels 3, 6 and 9 in lists named queue + sep + level.
_PRIORITY_SEP = "\x06\x16"
_PRIORITY_STEPS = (3, 6, 9)


def run_id_of(raw: bytes | str) -> int | None:
    """The run id of one serialized Celery message (protocol 2), or None if it is not ours."""
    try:
        msg = json.loads(raw)
        if isinstance(msg, list):  # the unacked hash stores [message, exchange, routing_key]
            msg = msg[0]
        if msg.get("headers", {}).get("task") != RUN_TASK:
            return None
        body = msg["body"]
        if msg.get("properties", {}).get("body_encoding") == "base64":
            body = base64.b64decode(body)
        args = json.loads(body)[0]
        return int(args[0])
    except (ValueError, KeyError, IndexError, TypeError):
        return None


def _ids(payloads: Iterable[bytes | str]) -> set[int]:
    return {i for i in map(run_id_of, payloads) if i is not None}


def live_run_ids(settings: Settings) -> set[int] | None:
    broker_url = settings.broker
    if broker_url.startswith(("redis://", "rediss://")):
        return _redis_live(broker_url, settings.broker_key_prefix)
    if broker_url.startswith("sqla+"):
        return _sqla_live(broker_url.removeprefix("sqla+"))
    return None


def _redis_live(url: str, prefix: str) -> set[int]:
    import redis

    client = redis.Redis.from_url(url, socket_connect_timeout=3, socket_timeout=10)
    try:
        names = [q for base in QUEUES.values()
                 for q in (base, *(f"{base}{_PRIORITY_SEP}{p}" for p in _PRIORITY_STEPS))]
        pipe = client.pipeline()
        for name in names:
            pipe.lrange(prefix + name, 0, -1)
        pipe.hvals(prefix + "unacked")
        lists = pipe.execute()
    finally:
        client.close()
    return _ids(p for payloads in lists for p in payloads)


def _sqla_live(url: str) -> set[int]:
    from server.db.session import make_engine

    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            tables = conn.dialect.get_table_names(conn)
            if "kombu_message" not in tables:
                return set()  # nothing was ever sent
            rows = conn.execute(text("SELECT payload FROM kombu_message WHERE visible"))
            return _ids(r[0] for r in rows)
    finally:
        engine.dispose()
