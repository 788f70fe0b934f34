"""The Sessions API's three hot paths as hand-written SQL on the driver (core/storage/driver.py).

Creating a session, posting a message to a live one and reading a page of its messages are what a
Sessions API client does all day. Through SQLAlchemy's session and statement machinery each spent
several times the database's own time (bench/README.md, "Sessions API"); here each is one op of a few
statements on the driver connection, with the same rules and the same rows as `SessionService`:

- `create`: the session row and its `created` activity, one `Database.write_sql` op (group-committed
  on SQLite with the other writes of the moment; on PostgreSQL one statement in autocommit);
- `post`: the live row read, the caller's access checked before anything is written, the renewal,
  the message and its `message_received` activity. SQLite: one `write_sql` op. PostgreSQL: the read,
  then one guarded statement, in autocommit (two round trips where the locked transaction takes six);
  when the guard finds the row changed since the read, nothing was written and the locked transaction
  (`SELECT ... FOR UPDATE`, then the same writes) runs instead. A session that is unknown, ended or
  past its expiry is left to `SessionService.send_message`, whose rules (410 once, then 404) commit
  the expiry;
- `page_json`: the session's state and a page of its messages in one read (`Database.read_sql`), each
  message rendered to its API JSON by the database itself (SQLite's JSON1, PostgreSQL's json
  functions), so the HTTP layer sends the page without building or encoding a Python object per
  message. `createdAt` is computed the way `core.clock.to_ms` computes it (float seconds x 1000,
  truncated), so both paths give the same number.

Each returns None when its fast path does not apply; the caller then takes the general one.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import datetime
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

from core.storage.driver import Sql

from . import timeouts

if TYPE_CHECKING:
    from .service import SendResult, SessionInfo, SessionService

# The columns SessionInfo needs, in this order.
_SESSION_COLUMNS = ("id, channel_id, agent_id, user_id, session_type, community_id, community, status, created_at, "
                    "last_activity, expires_at, renewal_count, renewed_at, timeout_config, metadata")
_LIVE = f"SELECT {_SESSION_COLUMNS} FROM nubi_sessions WHERE id = $1"
_LIVE_LOCKED = _LIVE + " FOR UPDATE"  # PostgreSQL: one writer per session at a time
_INSERT_SESSION = (
    "INSERT INTO nubi_sessions (id, channel_id, agent_id, user_id, session_type, community_id, community, status, "
    "created_at, last_activity, expires_at, renewal_count, timeout_config, metadata) "
    "VALUES ($1, $2, $3, $4, $5, NULL, $6, 'active', $7, $7, $8, 0, $9, $10)"
)
_INSERT_ACTIVITY = "INSERT INTO session_activity_log (session_id, activity_type, at, data) VALUES ($1, $2, $3, $4)"
# PostgreSQL: the session and its `created` activity in one statement (atomic by itself, one round trip).
_CREATE_PG = (
    "WITH s AS (" + _INSERT_SESSION + " RETURNING id) "
    "INSERT INTO session_activity_log (session_id, activity_type, at, data) SELECT id, 'created', $7, $11 FROM s"
)
_INSERT_MESSAGE = (
    "INSERT INTO session_messages (id, session_id, author_id, is_agent, content, created_at, attachments, metadata) "
    "VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
)
# `SessionService.health`: live sessions, and the ones that may be inside their warning threshold
# (the overrides as text on both databases: PostgreSQL's json type has no equality to group by).
COUNT_LIVE = "SELECT count(*) FROM nubi_sessions WHERE status = 'active' AND expires_at > $1"
EXPIRING_WITHIN = (
    "SELECT agent_id, CAST(timeout_config AS TEXT), expires_at FROM nubi_sessions "
    "WHERE status = 'active' AND expires_at > $1 AND expires_at <= $2"
)
_TOUCH = "UPDATE nubi_sessions SET last_activity = $2 WHERE id = $1"
_RENEW = ("UPDATE nubi_sessions SET last_activity = $2, renewed_at = $2, renewal_count = $3, expires_at = $4, "
          "warned_at = NULL WHERE id = $1")
# PostgreSQL: a message post as one statement in autocommit, after an unlocked read of the row ($3: renewed,
# $4: the expiry after it). The UPDATE re-checks, under the row's lock, everything the decision used as it
# was read (status, expiry, renewal count, timeout config): when another writer changed any of them it
# updates nothing, nothing is inserted and no row comes back, and the caller takes the locked transaction.
_POST_PG = (
    "WITH s AS (UPDATE nubi_sessions SET last_activity = $2, expires_at = $4,"
    " renewed_at = CASE WHEN $3 THEN $2 ELSE renewed_at END,"
    " renewal_count = CASE WHEN $3 THEN renewal_count + 1 ELSE renewal_count END,"
    " warned_at = CASE WHEN $3 THEN NULL ELSE warned_at END"
    " WHERE id = $1 AND status = 'active' AND renewal_count = $5 AND expires_at = $6 AND timeout_config = $7"
    " RETURNING id),"
    " m AS (INSERT INTO session_messages (id, session_id, author_id, is_agent, content, created_at, attachments,"
    " metadata) SELECT $8, id, $9, false, $10, $2, $11, $12 FROM s)"
    " INSERT INTO session_activity_log (session_id, activity_type, at, data)"
    " SELECT id, 'message_received', $2, $13 FROM s RETURNING session_id"
)
_STATE = "SELECT community, status, expires_at FROM nubi_sessions WHERE id = $1"

# One message's API object (StoredMessage.as_api), rendered by the database.
_SQLITE_CREATED_MS = (  # to_ms(): (seconds + microseconds / 10^6) as a double, x 1000, truncated
    "CAST(((CAST(strftime('%s', created_at) AS INTEGER) * 1000000 + CAST(substr(created_at, 21, 6) AS INTEGER))"
    " / 1000000.0) * 1000 AS INTEGER)"
)
_SQLITE_PAGE = (
    "SELECT json_object('id', id, 'content', content, 'authorId', author_id,"
    " 'isAgent', json(CASE WHEN is_agent THEN 'true' ELSE 'false' END),"
    f" 'createdAt', {_SQLITE_CREATED_MS},"
    " 'metadata', json(CASE WHEN metadata IS NULL OR metadata = 'null' THEN '{{}}' ELSE metadata END)),"
    f" {_SQLITE_CREATED_MS}"
    " FROM session_messages WHERE session_id = $1{where} ORDER BY created_at DESC, id DESC LIMIT $2"
)
_PG_CREATED_MS = "trunc((floor(extract(epoch FROM created_at) * 1000000)::float8 / 1000000.0::float8) * 1000.0::float8)::bigint"
_PG_PAGE = (
    "SELECT json_build_object('id', id, 'content', content, 'authorId', author_id, 'isAgent', is_agent,"
    f" 'createdAt', {_PG_CREATED_MS},"
    " 'metadata', CASE WHEN metadata IS NULL OR jsonb_typeof(metadata) = 'null' THEN '{{}}'::jsonb ELSE metadata END"
    f")::text, {_PG_CREATED_MS}"
    " FROM session_messages WHERE session_id = $1{where} ORDER BY created_at DESC, id DESC LIMIT $2"
)
_PAGE_TEXTS: dict[tuple[str, bool, bool], str] = {}


def _page_sql(dialect: str, before: bool, after: bool) -> str:
    key = (dialect, before, after)
    found = _PAGE_TEXTS.get(key)
    if found is None:
        where = (" AND created_at < $3" if before else "") + (f" AND created_at > ${4 if before else 3}" if after else "")
        found = _PAGE_TEXTS[key] = (_SQLITE_PAGE if dialect == "sqlite" else _PG_PAGE).format(where=where)
    return found


def _row(q: Sql, found: Any) -> SimpleNamespace:
    """A session row as the attributes SessionService.info_of and renew_row use."""
    (sid, channel_id, agent_id, user_id, session_type, community_id, community, status, created_at, last_activity,
     expires_at, renewal_count, renewed_at, timeout_config, meta) = found
    return SimpleNamespace(
        id=sid, channel_id=channel_id, agent_id=agent_id, user_id=user_id, session_type=session_type,
        community_id=community_id, community=community, status=status, created_at=q.when(created_at),
        last_activity=q.when(last_activity), expires_at=q.when(expires_at), renewal_count=renewal_count,
        renewed_at=q.when(renewed_at), timeout_config=q.doc(timeout_config) or {}, meta=q.doc(meta) or {},
        warned_at=None,
    )


async def create(service: SessionService, agent: str, user: str, meta: dict[str, Any], overrides: dict[str, Any],
                 community: str, session_type: str) -> SessionInfo:
    """A new session of no community id (a Sessions API conversation), its row and `created` activity."""
    now = service.clock.now()
    sid, channel = str(uuid.uuid4()), str(uuid.uuid4())
    row = SimpleNamespace(
        id=sid, channel_id=channel, agent_id=agent, user_id=user, session_type=session_type, community_id=None,
        community=community, created_at=now, last_activity=now, renewal_count=0, timeout_config=overrides, meta=meta,
    )
    row.expires_at = timeouts.expires_at(now, now, service.config_of(row))

    async def op(q: Sql) -> None:
        await q.run(_INSERT_SESSION, sid, channel, agent, user, session_type, community, q.ts(now),
                    q.ts(row.expires_at), q.json(overrides), q.json(meta))
        await q.run(_INSERT_ACTIVITY, sid, "created", q.ts(now), q.json({"type": session_type}))

    async def one_statement(q: Sql) -> None:
        await q.run(_CREATE_PG, sid, channel, agent, user, session_type, community, q.ts(now),
                    q.ts(row.expires_at), q.json(overrides), q.json(meta), q.json({"type": session_type}))

    if service.db.is_sqlite:
        await service.db.write_sql(op)
    else:
        await service.db.write_statement(one_statement)
    return service.info_of(row, now)


async def post(service: SessionService, sid: str, content: str, attachments: list[Any] | None,
               meta: dict[str, Any], allow: Callable[[str], None]) -> SendResult | None:
    """Store a user's message in a live session; None (nothing written) when the session is not live."""
    from .service import SendResult, StoredMessage

    def decide(q: Sql, found: Any) -> tuple[Any, bool, StoredMessage] | None:
        """The row, whether this message renews it, and the message; None when it is not live."""
        row = _row(q, found)
        allow(row.community)  # refused before anything is written or told
        now = service.clock.now()
        if row.status != "active" or row.expires_at <= now:
            return None
        cfg = service.config_of(row)
        renewed = cfg.auto_renew and service.renew_row(row, cfg, now)
        if not renewed:
            row.last_activity = now
        return row, renewed, StoredMessage(str(uuid.uuid4()), sid, row.user_id, False, content, now, attachments, meta)

    def result(row: Any, renewed: bool, message: StoredMessage) -> SendResult:
        return SendResult(message, service.info_of(row, message.created_at), renewed, None)

    async def locked(q: Sql) -> SendResult | None:
        found = await q.row(_LIVE if q.dialect == "sqlite" else _LIVE_LOCKED, sid)
        decided = None if found is None else decide(q, found)
        if decided is None:
            return None
        row, renewed, message = decided
        now = message.created_at
        if renewed:
            await q.run(_RENEW, sid, q.ts(now), row.renewal_count, q.ts(row.expires_at))
        else:
            await q.run(_TOUCH, sid, q.ts(now))
        await q.run(_INSERT_MESSAGE, message.id, sid, row.user_id, False, content, q.ts(now), q.json(attachments),
                    q.json(meta))
        await q.run(_INSERT_ACTIVITY, sid, "message_received", q.ts(now),
                    q.json({"messageId": message.id, "renewed": renewed}))
        return result(row, renewed, message)

    async def unlocked(q: Sql) -> SendResult | None | bool:
        """PostgreSQL: read, decide, then one guarded statement; False when the row changed meanwhile."""
        found = await q.row(_LIVE, sid)
        decided = None if found is None else decide(q, found)
        if decided is None:
            return None
        read = found[11], found[10], q.json(q.doc(found[13]))  # renewal count, expiry, timeout config, as read
        row, renewed, message = decided
        now = message.created_at
        stored = await q.value(_POST_PG, sid, now, renewed, row.expires_at, *read, message.id, row.user_id, content,
                               q.json(attachments), q.json(meta), q.json({"messageId": message.id, "renewed": renewed}))
        return stored is not None and result(row, renewed, message)

    if service.db.is_sqlite:
        return await service.db.write_sql(locked)
    done = await service.db.write_statement(unlocked)
    if done is False:  # another writer changed the session between the read and the write: nothing was written
        return await service.db.write_sql(locked)
    return done  # type: ignore[return-value]


async def page_json(service: SessionService, sid: str, limit: int, before: datetime | None, after: datetime | None,
                    allow: Callable[[str], None]) -> bytes | None:
    """The messages page's JSON body for a live session, or None (nothing read of it) when it is not live."""
    now = service.clock.now()

    async def op(q: Sql) -> bytes | None:
        state = await q.row(_STATE, sid)
        if state is None:
            return None
        allow(state[0])
        if state[1] != "active" or q.when(state[2]) <= now:  # type: ignore[operator]
            return None
        args: list[Any] = [sid, limit + 1]
        args += [q.ts(t) for t in (before, after) if t is not None]
        rows = await q.rows(_page_sql(q.dialect, before is not None, after is not None), *args)
        page, more = rows[:limit], len(rows) > limit
        body = '{"messages":[' + ",".join(r[0] for r in page) + '],"hasMore":' + ("true" if more else "false")
        if page:  # newest first: the last is the oldest
            body += f',"cursors":{{"before":{page[-1][1]},"after":{page[0][1]}}}'
        return (body + "}").encode()

    return await service.db.read_sql(op)
