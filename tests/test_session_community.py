"""Every session belongs to exactly one community, stored on its row (migration 0007 backfills it)."""

from __future__ import annotations

import json
import uuid

from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from core.directory import ChatRef, MemberRef
from core.raids.model import RaidSpec
from core.services import Services
from migrations import downgrade, upgrade

AGENT = "6f1c3e2a-9b7d-4e5f-8a1b-2c3d4e5f6a7b"


async def _run(url: str, sql: str, **params: object) -> list[tuple]:
    engine = create_async_engine(url)
    try:
        async with engine.begin() as conn:
            result = await conn.execute(text(sql), params)
            return [tuple(r) for r in result.all()] if result.returns_rows else []
    finally:
        await engine.dispose()


async def test_migration_0007_backfills_each_sessions_community(db_url: str) -> None:
    downgrade(db_url, "0003")
    await _run(db_url, "INSERT INTO communities (id, platform, external_id, settings, created_at) "
                       "VALUES (7, 'telegram', '-100999', '{}', '2026-12-01 00:00:00+00:00')")
    rows = {  # id: (type, community_id, metadata, lost community_id but raid row)
        "raid": ("raid", 7, {"raidId": 1}),
        "orphan": ("raid", None, {"raidId": 2}),
        "named": ("conversation", None, {"community": "guild-fans"}),
        "plain": ("conversation", None, {"userName": "ann"}),
    }
    ids = {name: str(uuid.uuid4()) for name in rows}
    for name, (kind, community_id, meta) in rows.items():
        await _run(db_url, "INSERT INTO nubi_sessions (id, channel_id, agent_id, user_id, session_type, community_id,"
                           " status, created_at, last_activity, expires_at, renewal_count, timeout_config, metadata)"
                           " VALUES (:id, :id, :agent, :id, :kind, :cid, 'active', '2026-12-01 00:00:00+00:00',"
                           " '2026-12-01 00:00:00+00:00', '2026-12-01 01:00:00+00:00', 0, '{}', :meta)",
                   id=ids[name], agent=AGENT, kind=kind, cid=community_id, meta=json.dumps(meta))
    for raid_id, session in ((1, ids["raid"]), (2, ids["orphan"])):
        await _run(db_url, "INSERT INTO raid_sessions (id, community_id, session_id, target_url, status, started_at,"
                           " ends_at, duration_seconds, max_participants, participant_count, action_count,"
                           " points_awarded, lock_chat, verification_tier, scoring) VALUES (:rid, 7, :sid,"
                           " 'https://x.com/a/status/1', 'active', '2026-12-01 00:00:00+00:00',"
                           " '2026-12-01 01:00:00+00:00', 3600, 10, 0, 0, 0, false, 'honor', '{}')",
                   rid=raid_id, sid=session)
    upgrade(db_url)
    found = dict(await _run(db_url, "SELECT id, community FROM nubi_sessions"))
    assert found == {ids["raid"]: "telegram:-100999", ids["orphan"]: "telegram:-100999",
                     ids["named"]: "web:guild-fans", ids["plain"]: f"web:agent:{AGENT}"}
    downgrade(db_url, "0003")  # and down again keeps every row
    assert len(await _run(db_url, "SELECT id FROM nubi_sessions")) == 4
    upgrade(db_url)


async def test_new_sessions_store_their_community(services: Services) -> None:
    raid = await services.raids.start(ChatRef("telegram", "-100999", "B"), RaidSpec("https://x.com/a/status/1", {"like": 1}),
                                      by=MemberRef("telegram", "1", "mod"))
    raid_session = await services.sessions.get(raid.session_id)
    assert raid_session.community == "telegram:-100999"  # not the agent's web community
    chat = await services.sessions.record_chat_message(raid.community_id, text="hi")
    assert (await services.sessions.get(chat)).community == "telegram:-100999"
    agent = services.settings.agents[0].id
    named = await services.sessions.create(agent, str(uuid.uuid4()), metadata={"community": "fans"})
    plain = await services.sessions.create(agent, str(uuid.uuid4()))
    assert (named.community, plain.community) == ("web:fans", f"web:agent:{agent}")


async def test_another_communitys_session_is_not_touched_by_looking(services: Services, clock) -> None:
    """The policy is asked before the session is read: an expired session of B stays as it was when a key
    of another community asks for it (reading it would end it), and the answer is plain not-found."""
    import httpx

    from adapters.http.app import create_app
    from core.config import ApiKey

    services.settings.http.api_keys = [ApiKey(key="key-of-web-a-0001", community="web:a"),
                                       ApiKey(key="key-of-web-b-0002", community="web:b")]
    b_session = await services.sessions.create(AGENT, str(uuid.uuid4()), metadata={"community": "b"})
    clock.advance(minutes=31)  # past its 30-minute timeout, not yet swept
    transport = httpx.ASGITransport(app=create_app(services))
    async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as http:
        for method, path in (("GET", ""), ("GET", "/messages"), ("POST", "/renew"), ("DELETE", "")):
            r = await http.request(method, f"/api/messaging/sessions/{b_session.id}{path}",
                                   headers={"X-API-KEY": "key-of-web-a-0001"})
            assert r.status_code == 404 and r.json()["error"]["code"] == "SESSION_NOT_FOUND", (method, path, r.text)
        status = await services.db.read(lambda s: s.execute(
            text("SELECT status FROM nubi_sessions WHERE id = :id"), {"id": b_session.id}))
        assert status.scalar() == "active"  # not ended by A's looking
        own = await http.get(f"/api/messaging/sessions/{b_session.id}", headers={"X-API-KEY": "key-of-web-b-0002"})
        assert own.status_code == 410 and own.json()["error"]["code"] == "SESSION_EXPIRED"  # B's own key: as specified
