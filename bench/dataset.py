"""Big, consistent raid data built fast with bulk inserts (executemany on SQLite, COPY on PostgreSQL).

Raids are started through the raid service (so they are real raids with objectives and a session);
members, participants and claims are bulk-loaded; then every maintained figure is derived from the
claims, so the data is what the services would have written: raid_participants.points is the sum
of its claims, member_scores holds each member's sum per window, the raid and objective counters
match the rows.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from datetime import datetime, timedelta

from core.directory import ChatRef
from core.raids.model import RaidSpec
from core.services import Services
from core.windows import WINDOWS, window_start

from .env import Raw

ALL_ACTIONS = ("like", "repost", "reply", "quote", "bookmark", "follow")
CHUNK = 50_000
CLAIM_SPREAD_SECONDS = 3600  # claims land in the first hour of their raid


async def start_raid(services: Services, chat: ChatRef, at: datetime) -> int:
    """A real raid asking for every action type (targets out of reach, so it stays active)."""
    services.clock.set(at)  # type: ignore[attr-defined]
    spec = RaidSpec(f"https://x.com/nubi/status/{at.timestamp():.0f}", objectives={a: 1_000_000 for a in ALL_ACTIONS},
                    duration_seconds=24 * 3600, max_participants=100_000)
    return (await services.raids.start(chat, spec)).id


async def _next_id(r: Raw, table: str) -> int:
    return int(await r.fetchval(f"SELECT coalesce(max(id), 0) FROM {table}")) + 1


async def add_members(r: Raw, community_id: int, count: int, at: datetime) -> list[int]:
    """`count` new members of the community (with a telegram identity each); their ids."""
    first, first_ident = await _next_id(r, "members"), await _next_id(r, "member_identities")
    ids = list(range(first, first + count))
    ts = r.ts(at)
    await r.begin()
    for lo in range(0, count, CHUNK):
        part = ids[lo : lo + CHUNK]
        await r.load("members", ("id", "display_name", "x_handle", "x_handle_verified", "created_at"),
                     [(m, f"member {m}", None, False, ts) for m in part])
        await r.load("member_identities", ("id", "member_id", "platform", "external_id", "username"),
                     [(first_ident + m - first, m, "telegram", str(9_000_000 + m), f"member{m}") for m in part])
        await r.load("community_members", ("community_id", "member_id", "is_moderator", "excluded", "last_seen_at"),
                     [(community_id, m, False, False, ts) for m in part])
    await r.commit()
    return ids


async def add_participants(
    r: Raw, raid_id: int, member_ids: Sequence[int], claims_each: int, started: datetime, seed: int
) -> int:
    """Every member joins the raid (in the given order) and claims `claims_each` distinct actions."""
    rng = random.Random(seed)
    points_of = dict(await r.fetchall("SELECT action_type, points FROM raid_objectives WHERE raid_id = ?", raid_id))
    stamps = [r.ts(started + timedelta(seconds=s)) for s in range(CLAIM_SPREAD_SECONDS + 1)]
    position0 = int(await r.fetchval("SELECT coalesce(max(join_position), 0) FROM raid_participants WHERE raid_id = ?",
                                     raid_id))
    next_part, next_action = await _next_id(r, "raid_participants"), await _next_id(r, "raid_actions")
    await r.begin()
    claims = 0
    for lo in range(0, len(member_ids), CHUNK):
        parts, acts = [], []
        for k, member_id in enumerate(member_ids[lo : lo + CHUNK], lo):
            pid = next_part + k
            total, last = 0, 0
            for action in rng.sample(ALL_ACTIONS, claims_each):
                points = points_of[action] + rng.randrange(4)  # the objective's points plus a speed bonus
                second = rng.randrange(CLAIM_SPREAD_SECONDS)
                total, last = total + points, max(last, second)
                acts.append((next_action, raid_id, pid, member_id, action, "unverifiable", points, None, "claim",
                             stamps[second]))
                next_action += 1
            parts.append((pid, raid_id, member_id, position0 + k + 1, stamps[0], total, claims_each,
                          claims_each == len(points_of), stamps[last] if claims_each else None))
        await r.load("raid_participants", ("id", "raid_id", "member_id", "join_position", "joined_at", "points",
                                           "claims_count", "completed_all", "last_scored_at"), parts)
        await r.load("raid_actions", ("id", "raid_id", "participant_id", "member_id", "action_type", "verification",
                                      "points", "proof_url", "source", "claimed_at"), acts)
        claims += len(acts)
    await r.commit()
    return claims


async def derive(r: Raw, community_id: int, raids: dict[int, datetime]) -> None:
    """Counters and running scores from the claims, as the services maintain them."""
    await r.begin()
    for raid_id in raids:
        await r.execute(
            "UPDATE raid_sessions SET "
            "participant_count = (SELECT count(*) FROM raid_participants WHERE raid_id = ?), "
            "action_count = (SELECT count(*) FROM raid_actions WHERE raid_id = ?), "
            "points_awarded = (SELECT coalesce(sum(points), 0) FROM raid_participants WHERE raid_id = ?) WHERE id = ?",
            raid_id, raid_id, raid_id, raid_id,
        )
        await r.execute(
            "UPDATE raid_objectives SET count = (SELECT count(*) FROM raid_actions a WHERE a.raid_id = ? "
            "AND a.action_type = raid_objectives.action_type) WHERE raid_id = ?",
            raid_id, raid_id,
        )
    await r.execute("DELETE FROM member_scores WHERE community_id = ?", community_id)
    # Claims stay within their raid's first hour, so each raid falls in one day, week and month.
    for window in WINDOWS:
        by_start: dict[datetime, list[int]] = {}
        for raid_id, started in raids.items():
            by_start.setdefault(window_start(window, started), []).append(raid_id)
        for start, ids in by_start.items():
            marks = ", ".join("?" for _ in ids)
            # PostgreSQL cannot infer the type of a parameter in a SELECT list; SQLite must not cast dates.
            head = "?, ?, ?" if r.is_sqlite else "?::bigint, ?::varchar, ?::timestamptz"
            await r.execute(
                'INSERT INTO member_scores (community_id, "window", window_start, member_id, points, last_scored_at) '
                f"SELECT {head}, member_id, sum(points), max(claimed_at) FROM raid_actions WHERE raid_id IN ({marks}) "
                "AND verification IN ('verified', 'unverifiable') GROUP BY member_id",
                community_id, window, r.ts(start), *ids,
            )
    await r.commit()
    if not r.is_sqlite:
        for table in ("members", "member_identities", "raid_participants", "raid_actions"):
            await r.execute(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), (SELECT max(id) FROM {table}))")
        await r.execute("ANALYZE")  # what autovacuum does soon after a bulk load in production
