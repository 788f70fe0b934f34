"""Sessions: every conversation with the bot, persisted, with timeouts, renewal and an activity log.

Everything of sessions-api.md below the HTTP layer. The first call that finds a session past its
expiry ends it and answers SessionExpired; from then on the id answers SessionNotFound.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, bindparam, func, select, update
from sqlalchemy import inspect as sa_inspect
from sqlalchemy.ext.asyncio import AsyncSession

from core.clock import Clock, from_ms, to_ms
from core.config import Settings
from core.errors import (
    AgentNotFound,
    SessionExpired,
    SessionNotFound,
    SessionRenewalFailed,
    ValidationError,
)
from core.events import EventBus, SessionCreated, SessionMessageStored
from core.events import SessionExpired as SessionExpiredEvent
from core.storage.db import Database
from core.storage.driver import Sql
from core.storage.models import SESSION_TYPES, Community, NubiSession, SessionActivity, SessionMessage
from core.storage.upsert import add_now

from . import hot, timeouts
from .timeouts import TimeoutConfig

MAX_METADATA_BYTES = 10 * 1024
MAX_CONTENT_CHARS = 4000
TRANSPORTS = ("http", "sse", "websocket")


def parse_uuid(value: Any, field: str) -> str:
    if not isinstance(value, str):
        raise ValidationError(f"{field} is required and must be a UUID string", field=field)
    try:
        return str(uuid.UUID(value))
    except ValueError as exc:
        raise ValidationError(f"{field} must be a valid UUID", field=field) from exc


def web_community(metadata: dict[str, Any], agent_id: str) -> str:
    """The web community's external id of a conversation: `metadata.community`, else the agent's own."""
    community = metadata.get("community")
    if not isinstance(community, str) or not community.strip() or len(community) > 128:
        community = f"agent:{agent_id}"
    return community


def check_metadata(metadata: Any, field: str = "metadata") -> dict[str, Any]:
    if metadata is None:
        return {}
    if not isinstance(metadata, dict):
        raise ValidationError(f"{field} must be an object", field=field)
    size = len(json.dumps(metadata, separators=(",", ":"), default=str).encode())
    if size > MAX_METADATA_BYTES:
        raise ValidationError(f"{field} is {size} bytes; at most 10 KB is allowed", field=field)
    return metadata


@dataclass(frozen=True)
class SessionInfo:
    id: str
    channel_id: str
    agent_id: str
    user_id: str
    session_type: str
    community_id: int | None
    community: str  # "<platform>:<external id>": who may see it is decided by this (core/access.py)
    created_at: datetime
    last_activity: datetime
    expires_at: datetime
    renewal_count: int
    metadata: dict[str, Any]
    timeout: TimeoutConfig
    now: datetime

    @property
    def time_remaining_ms(self) -> int:
        return max(0, to_ms(self.expires_at) - to_ms(self.now))

    @property
    def is_near_expiration(self) -> bool:
        remaining = self.time_remaining_ms
        return 0 < remaining <= self.timeout.warning_threshold_minutes * 60_000

    def as_api(self) -> dict[str, Any]:
        return {
            "sessionId": self.id,
            "channelId": self.channel_id,
            "agentId": self.agent_id,
            "userId": self.user_id,
            "createdAt": self.created_at.isoformat(),
            "lastActivity": self.last_activity.isoformat(),
            "metadata": self.metadata,
            "expiresAt": self.expires_at.isoformat(),
            "timeoutConfig": self.timeout.as_api(),
            "renewalCount": self.renewal_count,
            "timeRemaining": self.time_remaining_ms,
            "isNearExpiration": self.is_near_expiration,
        }


@dataclass(frozen=True)
class StoredMessage:
    id: str
    session_id: str
    author_id: str
    is_agent: bool
    content: str
    created_at: datetime
    attachments: list[Any] | None
    metadata: dict[str, Any]

    def as_api(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "content": self.content,
            "authorId": self.author_id,
            "isAgent": self.is_agent,
            "createdAt": to_ms(self.created_at),
            "metadata": self.metadata,
        }


@dataclass(frozen=True)
class SendResult:
    user_message: StoredMessage
    session: SessionInfo
    was_renewed: bool
    agent_message: StoredMessage | None


@dataclass(frozen=True)
class MessagePage:
    messages: list[StoredMessage]
    has_more: bool


# A responder turns a user's message into the bot's reply text (or None for no reply).
Responder = Callable[[SessionInfo, str], Awaitable[str | None]]


def _message(row: SessionMessage) -> StoredMessage:
    return StoredMessage(
        row.id,
        row.session_id,
        row.author_id,
        row.is_agent,
        row.content,
        row.created_at,
        row.attachments,
        row.meta or {},
    )


class SessionService:
    def __init__(self, db: Database, clock: Clock, settings: Settings, bus: EventBus) -> None:
        self.db = db
        self.clock = clock
        self.settings = settings
        self.bus = bus

    # -- helpers -------------------------------------------------------------------------------

    def config_of(self, row: Any) -> TimeoutConfig:
        return timeouts.resolve(row.timeout_config or {}, self.settings.agent(row.agent_id), self.settings.sessions)

    def info_of(self, row: Any, now: datetime) -> SessionInfo:
        return SessionInfo(
            row.id,
            row.channel_id,
            row.agent_id,
            row.user_id,
            row.session_type,
            row.community_id,
            row.community,
            row.created_at,
            row.last_activity,
            row.expires_at,
            row.renewal_count,
            row.meta or {},
            self.config_of(row),
            now,
        )

    @staticmethod
    async def _log(s: AsyncSession, session_id: str, kind: str, at: datetime, **data: Any) -> None:
        await add_now(s, SessionActivity(session_id=session_id, activity_type=kind, at=at, data=data))

    async def _live(self, s: AsyncSession, session_id: str, now: datetime) -> _LiveRow:
        """The session row if it is alive; ends it (once) and raises if it has expired."""
        try:
            sid = str(uuid.UUID(str(session_id)))
        except ValueError as exc:
            raise SessionNotFound(f"Session {session_id} not found") from exc
        found = (await s.execute(_LIVE_SQLITE if self.db.is_sqlite else _LIVE_LOCKED, {"id": sid})).first()
        if found is None or found.status == "ended":
            raise SessionNotFound(f"Session {session_id} not found")
        row = _LiveRow(found._asdict())
        if row.status == "expired" or row.expires_at <= now:
            if row.status == "active":
                await self._log(s, row.id, "expired", now)
            row.status = "ended"
            row.ended_at = row.ended_at or now
            raise _Expired(row.id, row)
        return row

    async def _write_live(self, session_id: str, op: Callable[[AsyncSession, Any, datetime], Any]) -> Any:
        """Run `op` on a live session in one transaction; an expiry found on the way is committed."""

        async def run(s: AsyncSession) -> Any:
            now = self.clock.now()
            try:
                row = await self._live(s, session_id, now)
            except _Expired as exp:
                await exp.row.save(s)
                return exp
            result = await op(s, row, now)
            await row.save(s)
            return result

        result = await self.db.write(run)
        if isinstance(result, _Expired):
            await self.bus.publish(SessionExpiredEvent(result.session_id))
            raise SessionExpired(f"Session {session_id} has expired", details={"sessionId": result.session_id})
        return result

    def renew_row(self, row: Any, cfg: TimeoutConfig, now: datetime) -> bool:
        if now - row.created_at >= timedelta(minutes=cfg.max_duration_minutes):
            return False
        row.last_activity = now
        row.renewed_at = now
        row.renewal_count += 1
        row.expires_at = timeouts.expires_at(row.created_at, now, cfg)
        row.warned_at = None
        return True

    # -- lifecycle ---------------------------------------------------------------------------------

    async def create(
        self,
        agent_id: Any,
        user_id: Any,
        *,
        metadata: Any = None,
        timeout_config: Any = None,
        session_type: str = "conversation",
        community_id: int | None = None,
    ) -> SessionInfo:
        """Open a session; with `community_id` it belongs to that community, else to its web community."""
        agent = parse_uuid(agent_id, "agentId")
        user = parse_uuid(user_id, "userId")
        meta = check_metadata(metadata)
        if session_type not in SESSION_TYPES:
            raise ValidationError(f"session type must be one of {', '.join(SESSION_TYPES)}", field="type")
        if self.settings.agent(agent) is None:
            raise AgentNotFound(f"Agent {agent} is not a configured agent")
        overrides = timeouts.coerce_session_overrides(timeout_config, self.settings.sessions)
        if community_id is None:  # a Sessions API conversation: the hot path (core/sessions/hot.py)
            info = await hot.create(self, agent, user, meta, overrides, f"web:{web_community(meta, agent)}",
                                    session_type)
            await self.bus.publish(SessionCreated(info.id, session_type))
            return info
        now = self.clock.now()
        row = NubiSession(
            id=str(uuid.uuid4()),
            channel_id=str(uuid.uuid4()),
            agent_id=agent,
            user_id=user,
            session_type=session_type,
            community_id=community_id,
            community=f"web:{web_community(meta, agent)}",
            status="active",
            created_at=now,
            last_activity=now,
            renewal_count=0,
            timeout_config=overrides,
            meta=meta,
        )
        row.expires_at = timeouts.expires_at(now, now, self.config_of(row))

        async def op(s: AsyncSession) -> SessionInfo:
            if community_id is not None:
                row.community = await _community_name(s, community_id)
            await add_now(s, row)
            await self._log(s, row.id, "created", now, type=session_type)
            return self.info_of(row, now)

        info = await self.db.write(op)
        await self.bus.publish(SessionCreated(info.id, session_type))
        return info

    async def community_of(self, session_id: str) -> str | None:
        """The community a session belongs to, read without touching it (expiry included); None if unknown.

        Callers ask the access policy with it before anything else, so a caller who may not see the
        session can neither learn its state nor end it by looking."""
        try:
            sid = str(uuid.UUID(str(session_id)))
        except ValueError:
            return None
        return await self.db.read(lambda s: s.scalar(select(NubiSession.community).where(NubiSession.id == sid)))

    async def get(self, session_id: str) -> SessionInfo:
        async def op(s: AsyncSession, row: _LiveRow, now: datetime) -> SessionInfo:
            return self.info_of(row, now)

        return await self._write_live(session_id, op)

    async def list(self, *, community: str | None = None) -> tuple[list[SessionInfo], dict[str, int]]:
        """Active sessions, newest first, and counts by state; of one community, or (None) of all."""
        mine = [NubiSession.community == community] if community is not None else []

        async def op(s: AsyncSession) -> tuple[list[SessionInfo], dict[str, int]]:
            now = self.clock.now()
            rows = (
                await s.scalars(
                    select(NubiSession)
                    .where(NubiSession.status == "active", NubiSession.expires_at > now, *mine)
                    .order_by(NubiSession.created_at.desc())
                )
            ).all()
            counts = dict(
                (await s.execute(
                    select(NubiSession.status, func.count()).where(*mine).group_by(NubiSession.status)
                )).all()
            )
            overdue = await s.scalar(
                select(func.count()).where(NubiSession.status == "active", NubiSession.expires_at <= now, *mine)
            )
            stats = {
                "totalSessions": sum(counts.values()),
                "activeSessions": counts.get("active", 0) - (overdue or 0),
                "expiredSessions": counts.get("expired", 0) + (overdue or 0),
            }
            return [self.info_of(r, now) for r in rows], stats

        return await self.db.read(op)

    async def renew(self, session_id: str) -> SessionInfo:
        async def op(s: AsyncSession, row: _LiveRow, now: datetime) -> SessionInfo | _RenewRefused:
            if not self.renew_row(row, self.config_of(row), now):
                return _RenewRefused()
            await self._log(s, row.id, "renewed", now, manual=True, renewalCount=row.renewal_count)
            return self.info_of(row, now)

        result = await self._write_live(session_id, op)
        if isinstance(result, _RenewRefused):
            raise SessionRenewalFailed(
                "Session has reached its maximum duration and cannot be renewed",
                details={"sessionId": session_id},
            )
        return result

    async def heartbeat(self, session_id: str) -> SessionInfo:
        async def op(s: AsyncSession, row: _LiveRow, now: datetime) -> SessionInfo:
            cfg = self.config_of(row)
            renewed = cfg.auto_renew and self.renew_row(row, cfg, now)
            if not renewed:
                row.last_activity = now
            await self._log(s, row.id, "heartbeat", now, renewed=renewed)
            return self.info_of(row, now)

        return await self._write_live(session_id, op)

    async def update_timeout(self, session_id: str, raw: Any) -> SessionInfo:
        overrides = timeouts.coerce_session_overrides(raw, self.settings.sessions, strict_timeout=True)

        async def op(s: AsyncSession, row: _LiveRow, now: datetime) -> SessionInfo:
            row.timeout_config = {**(row.timeout_config or {}), **overrides}
            cfg = self.config_of(row)
            base = row.last_activity if cfg.auto_renew else (row.renewed_at or row.created_at)
            row.expires_at = timeouts.expires_at(row.created_at, base, cfg)
            row.warned_at = None
            await self._log(s, row.id, "timeout_changed", now, timeoutConfig=cfg.as_api())
            return self.info_of(row, now)

        return await self._write_live(session_id, op)

    async def end(self, session_id: str, reason: str = "deleted") -> None:
        async def op(s: AsyncSession, row: _LiveRow, now: datetime) -> None:
            row.status = "ended"
            row.ended_at = now
            await self._log(s, row.id, "ended", now, reason=reason)

        await self._write_live(session_id, op)

    # -- messages ----------------------------------------------------------------------------------

    async def send_message(
        self,
        session_id: str,
        content: Any,
        *,
        attachments: Any = None,
        metadata: Any = None,
        responder: Responder | None = None,
        allow: Callable[[str], None] | None = None,
    ) -> SendResult:
        """Store a user's message, then ask `responder` for the bot's reply. With `allow`, the caller's
        access check is run on the session's community (raising to refuse) before anything is written:
        the hot path of core/sessions/hot.py, one transaction for the check, the renewal and the message."""
        try:
            meta = _checked_message(content, attachments, metadata)
        except ValidationError:
            if allow is not None:  # the access check comes first, as it does for every other route
                community = await self.community_of(session_id)
                if community is not None:
                    allow(community)
            raise

        async def op(s: AsyncSession, row: _LiveRow, now: datetime) -> SendResult:
            cfg = self.config_of(row)
            renewed = cfg.auto_renew and self.renew_row(row, cfg, now)
            if not renewed:
                row.last_activity = now
            msg = SessionMessage(
                id=str(uuid.uuid4()),
                session_id=row.id,
                author_id=row.user_id,
                is_agent=False,
                content=content,
                created_at=now,
                attachments=attachments,
                meta=meta,
            )
            await add_now(s, msg)
            await self._log(s, row.id, "message_received", now, messageId=msg.id, renewed=renewed)
            return SendResult(_message(msg), self.info_of(row, now), renewed, None)

        fast = None
        if allow is not None:
            sid = _uuid_or_none(session_id)
            if sid is not None:
                fast = await hot.post(self, sid, content, attachments, meta, allow)
        result: SendResult = fast or await self._write_live(session_id, op)
        await self.bus.publish(SessionMessageStored(result.session.id, result.user_message.as_api()))
        if responder is None:
            return result
        reply = await responder(result.session, content)
        if reply is None:
            return result
        agent_msg = await self.add_agent_message(result.session.id, reply, reply_to=result.user_message.id)
        return SendResult(result.user_message, result.session, result.was_renewed, agent_msg)

    async def add_agent_message(self, session_id: str, content: str, *, reply_to: str | None = None) -> StoredMessage:
        async def op(s: AsyncSession) -> StoredMessage:
            now = self.clock.now()
            row = await s.get(NubiSession, session_id)
            if row is None:
                raise SessionNotFound(f"Session {session_id} not found")
            # The reply must sort after the message it answers, even on a clock that did not move.
            msg = SessionMessage(
                id=str(uuid.uuid4()),
                session_id=session_id,
                author_id=row.agent_id,
                is_agent=True,
                content=content,
                created_at=now + timedelta(milliseconds=1),
                attachments=None,
                meta={"replyTo": reply_to} if reply_to else {},
            )
            await add_now(s, msg)
            await self._log(s, session_id, "message_sent", now, messageId=msg.id)
            return _message(msg)

        stored = await self.db.write(op)
        await self.bus.publish(SessionMessageStored(session_id, stored.as_api()))
        return stored

    async def messages(
        self, session_id: str, *, limit: Any = 50, before: Any = None, after: Any = None
    ) -> MessagePage:
        lim = _int_param(limit, "limit")
        if lim is None:
            lim = 50
        if not 1 <= lim <= 100:
            raise ValidationError("limit must be between 1 and 100", field="limit")
        before_ms = _int_param(before, "before")
        after_ms = _int_param(after, "after")

        def page_query(sid: str) -> Any:
            m = _MESSAGE
            conds = [m.c.session_id == sid]
            if before_ms is not None:
                conds.append(m.c.created_at < from_ms(before_ms))
            if after_ms is not None:
                conds.append(m.c.created_at > from_ms(after_ms))
            return (select(m.c.id, m.c.session_id, m.c.author_id, m.c.is_agent, m.c.content, m.c.created_at,
                           m.c.attachments, m.c["metadata"])
                    .where(and_(*conds)).order_by(m.c.created_at.desc(), m.c.id.desc()).limit(lim + 1))

        def page(rows: Any) -> MessagePage:
            return MessagePage([StoredMessage(*r[:7], r[7] or {}) for r in rows[:lim]], len(rows) > lim)

        try:
            sid = str(uuid.UUID(str(session_id)))
        except ValueError:
            sid = None
        if sid is not None:
            # Reading a live session's messages changes nothing: one read transaction, no writer.
            now = self.clock.now()

            async def read(s: AsyncSession) -> MessagePage | None:
                state = (await s.execute(_STATE, {"id": sid})).first()
                if state is None or state.status != "active" or state.expires_at <= now:
                    return None
                return page((await s.execute(page_query(sid))).all())

            found = await self.db.read(read)
            if found is not None:
                return found
        # Unknown, ended or expired: the live-session rules answer (an expiry is committed: 410 once, then 404).
        session_id = (await self.get(session_id)).id
        return await self.db.read(lambda s: self._page(s, page_query(session_id), page))

    async def messages_json(
        self, session_id: str, *, limit: Any = 50, before: Any = None, after: Any = None,
        allow: Callable[[str], None],
    ) -> bytes | None:
        """`messages` of a live session as the API's JSON body, rendered by the database in one read
        (core/sessions/hot.py), after `allow` checked the caller's access to the session's community.
        None when the hot path does not apply (bad parameters, an unknown, ended or expired session):
        the caller then takes `messages`, whose rules answer."""
        sid = _uuid_or_none(session_id)
        try:
            lim = _int_param(limit, "limit")
            before_ms = _int_param(before, "before")
            after_ms = _int_param(after, "after")
        except ValidationError:
            return None
        lim = 50 if lim is None else lim
        if sid is None or not 1 <= lim <= 100:
            return None
        return await hot.page_json(self, sid, lim, None if before_ms is None else from_ms(before_ms),
                                   None if after_ms is None else from_ms(after_ms), allow)

    @staticmethod
    async def _page(s: AsyncSession, query: Any, page: Callable[[Any], MessagePage]) -> MessagePage:
        return page((await s.execute(query)).all())

    # -- sweeps and stats --------------------------------------------------------------------------

    async def sweep(self) -> dict[str, int]:
        """End expired sessions and mark those inside their warning threshold. Safe to run anywhere, twice."""

        async def op(s: AsyncSession) -> tuple[list[str], int]:
            now = self.clock.now()
            expired = (
                await s.scalars(
                    update(NubiSession)
                    .where(NubiSession.status == "active", NubiSession.expires_at <= now)
                    .values(status="expired", ended_at=now)
                    .returning(NubiSession.id)
                )
            ).all()
            for sid in expired:
                await self._log(s, sid, "expired", now, by="sweep")
            candidates = (
                await s.scalars(
                    select(NubiSession).where(
                        NubiSession.status == "active",
                        NubiSession.warned_at.is_(None),
                        NubiSession.expires_at > now,
                        NubiSession.expires_at <= now + timedelta(minutes=60),
                    )
                )
            ).all()
            warned = 0
            for row in candidates:
                if row.expires_at - now <= timedelta(minutes=self.config_of(row).warning_threshold_minutes):
                    row.warned_at = now
                    await self._log(s, row.id, "warned", now)
                    warned += 1
            return list(expired), warned

        expired, warned = await self.db.write(op)
        for sid in expired:
            await self.bus.publish(SessionExpiredEvent(sid))
        return {"expired": len(expired), "warned": warned}

    async def health(self) -> dict[str, int]:
        """Live sessions, and those of them inside their warning threshold (looked at up to an hour
        ahead). Cheap enough to poll: two statements on the driver, and each distinct timeout setting
        (agent and the session's own overrides) resolved once, not once per session."""
        now = self.clock.now()

        async def op(q: Sql) -> dict[str, int]:
            active = await q.value(hot.COUNT_LIVE, q.ts(now))
            cutoffs: dict[tuple[str, str], Any] = {}
            soon = 0
            for agent_id, overrides, expires in await q.rows(hot.EXPIRING_WITHIN, q.ts(now),
                                                             q.ts(now + timedelta(minutes=60))):
                cutoff = cutoffs.get((agent_id, overrides))
                if cutoff is None:
                    warning = timeouts.resolve(q.doc(overrides) or {}, self.settings.agent(agent_id),
                                               self.settings.sessions).warning_threshold_minutes
                    cutoff = cutoffs[(agent_id, overrides)] = q.ts(now + timedelta(minutes=warning))
                soon += expires <= cutoff
            return {"activeSessions": active or 0, "expiringSoon": soon}

        return await self.db.read_sql(op)

    async def activity(self, session_id: str) -> list[dict[str, Any]]:
        async def op(s: AsyncSession) -> list[dict[str, Any]]:
            rows = (
                await s.scalars(
                    select(SessionActivity)
                    .where(SessionActivity.session_id == session_id)
                    .order_by(SessionActivity.id)
                )
            ).all()
            return [{"type": r.activity_type, "at": r.at, "data": r.data} for r in rows]

        return await self.db.read(op)

    async def record_chat_message(self, community_id: int, **data: Any) -> str:
        """Log a chat message to its community's session (type `community`), opened on first use.

        A chat's conversation with the bot is one sliding session: activity renews it, and after it
        expires the next message opens a new one.
        """

        async def op(s: AsyncSession) -> str:
            now = self.clock.now()
            row = await s.scalar(
                select(NubiSession)
                .where(
                    NubiSession.community_id == community_id,
                    NubiSession.session_type == "community",
                    NubiSession.status == "active",
                    NubiSession.expires_at > now,
                )
                .order_by(NubiSession.created_at.desc())
                .limit(1)
            )
            if row is None:
                row = NubiSession(
                    id=str(uuid.uuid4()), channel_id=str(uuid.uuid4()), agent_id=self.settings.agents[0].id,
                    user_id=str(uuid.UUID(int=0)), session_type="community", community_id=community_id,
                    community=await _community_name(s, community_id), status="active", created_at=now, last_activity=now, renewal_count=0, timeout_config={},
                    meta={"communityId": community_id},
                )
                row.expires_at = timeouts.expires_at(now, now, self.config_of(row))
                s.add(row)
                await s.flush()
                await self._log(s, row.id, "created", now, type="community")
            else:
                cfg = self.config_of(row)
                if not (cfg.auto_renew and self.renew_row(row, cfg, now)):
                    row.last_activity = now
            await self._log(s, row.id, "message_received", now, **data)
            return row.id

        return await self.db.write(op)

    async def log_activity(self, session_id: str, kind: str, **data: Any) -> None:
        async def op(s: AsyncSession) -> None:
            await self._log(s, session_id, kind, self.clock.now(), **data)

        await self.db.write(op)


async def _community_name(s: AsyncSession, community_id: int) -> str:
    found = (await s.execute(select(Community.platform, Community.external_id).where(Community.id == community_id))).first()
    if found is None:
        raise ValidationError(f"there is no community #{community_id}", field="communityId")
    return f"{found[0]}:{found[1]}"


class _Expired(Exception):
    def __init__(self, session_id: str, row: _LiveRow) -> None:
        super().__init__(session_id)
        self.session_id = session_id
        self.row = row


_SESSION = NubiSession.__table__
_FIELDS = {prop.key: prop.columns[0] for prop in sa_inspect(NubiSession).column_attrs}
_LIVE_SQLITE = select(*[column.label(key) for key, column in _FIELDS.items()]).where(
    _SESSION.c.id == bindparam("id")
)
_STATE = select(_SESSION.c.status, _SESSION.c.expires_at).where(_SESSION.c.id == bindparam("id"))
_MESSAGE = SessionMessage.__table__
_LIVE_LOCKED = _LIVE_SQLITE.with_for_update()  # PostgreSQL: one writer per session at a time
_UPDATES: dict[frozenset[str], Any] = {}


class _LiveRow:
    """A session row read with one Core statement; what an op changes is written back with one UPDATE.

    Reading and saving the row through the ORM (identity map, unit of work) cost more than the rest
    of a message's transaction together. The attributes are NubiSession's.
    """

    def __init__(self, values: dict[str, Any]) -> None:
        self.__dict__.update(values)
        self.__dict__["_changed"] = set()

    def __setattr__(self, name: str, value: Any) -> None:
        if name not in _FIELDS:
            raise AttributeError(f"sessions have no field {name!r}")
        self.__dict__[name] = value
        self._changed.add(name)

    async def save(self, s: AsyncSession) -> None:
        if not self._changed:
            return
        keys = frozenset(self._changed)
        stmt = _UPDATES.get(keys)
        if stmt is None:
            stmt = _UPDATES[keys] = (
                update(_SESSION)
                .where(_SESSION.c.id == bindparam("b_id"))
                .values({_FIELDS[k]: bindparam(f"b_{k}") for k in sorted(keys)})
            )
        await s.execute(stmt, {"b_id": self.id, **{f"b_{k}": self.__dict__[k] for k in keys}})
        self._changed.clear()


class _RenewRefused:
    pass


def _checked_message(content: Any, attachments: Any, metadata: Any) -> dict[str, Any]:
    """A message's content, attachments and metadata checked; the metadata to store."""
    if not isinstance(content, str) or not content.strip():
        raise ValidationError("content is required and must be a non-empty string", field="content")
    if len(content) > MAX_CONTENT_CHARS:
        raise ValidationError(f"content is longer than {MAX_CONTENT_CHARS} characters", field="content")
    meta = check_metadata(metadata)
    if attachments is not None and not isinstance(attachments, list):
        raise ValidationError("attachments must be an array", field="attachments")
    return meta


def _uuid_or_none(value: Any) -> str | None:
    try:
        return str(uuid.UUID(str(value)))
    except ValueError:
        return None


def _int_param(value: Any, field: str) -> int | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise ValidationError(f"{field} must be an integer", field=field)
    try:
        number = float(value)
    except (TypeError, ValueError) as exc:
        raise ValidationError(f"{field} must be an integer", field=field) from exc
    if number != number or number in (float("inf"), float("-inf")) or number != int(number):
        raise ValidationError(f"{field} must be an integer", field=field)
    if field in ("before", "after") and number < 0:
        raise ValidationError(f"{field} must be a timestamp in milliseconds", field=field)
    return int(number)
