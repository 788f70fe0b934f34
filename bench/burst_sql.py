"""The burst's raw-driver baselines: what `RaidService.join` and `.claim` do, written as plain SQL.

Statement for statement the same work as core/raids/service.py (join, claim, _credit_claim) and
core/scores.py (credit) on the honor tier, in the same order: the same reads (a claim's context in
one statement, objectives kept per raid once read), conditional updates, upserts and activity rows,
one transaction per command. When core's statements change, this file changes with them, or the
ratio stops meaning "what the stack costs over the driver". `batch` writes the same final rows in one
transaction (COPY on PostgreSQL): the ceiling no per-command design can pass.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

from core.directory import MemberRef
from core.raids import scoring
from core.windows import WINDOWS, window_start

from .env import Raw

RAID_COLS = (
    "id, community_id, session_id, target_url, status, started_by, started_at, ends_at, ended_at, "
    "duration_seconds, max_participants, participant_count, action_count, points_awarded, lock_chat, "
    "verification_tier, scoring, progress_ref, end_reason"
)
SELECT_RAID = f"SELECT {RAID_COLS} FROM raid_sessions WHERE id = ?"
SCORE_UPSERT = (
    'INSERT INTO member_scores (community_id, "window", window_start, member_id, points, last_scored_at) VALUES '
    + ", ".join(["(?, ?, ?, ?, ?, ?)"] * len(WINDOWS))
    + ' ON CONFLICT (community_id, "window", window_start, member_id) DO UPDATE SET '
    "points = member_scores.points + excluded.points, last_scored_at = excluded.last_scored_at"
)
ACTIVITY = "INSERT INTO session_activity_log (session_id, activity_type, at, data) VALUES (?, ?, ?, ?)"


class Refused(Exception):
    """A command the core would refuse (raid over, not a participant): the burst expects none."""


async def _open_raid(r: Raw, raid_id: int, now: datetime) -> Any:
    raid = await r.fetchrow(SELECT_RAID, raid_id)
    if raid is None or raid[4] != "active" or r.parse_ts(raid[7]) <= now:
        raise Refused(f"raid {raid_id} is not open")
    return raid


def _rules(value: Any) -> scoring.ScoringRules:
    """A raid's `scoring`: JSON text on SQLite, jsonb (text through asyncpg) on PostgreSQL."""
    return scoring.ScoringRules.from_dict(json.loads(value) if isinstance(value, str) else value)


async def _credit(r: Raw, community_id: int, member_id: int, points: int, at: datetime) -> None:
    if points == 0:
        return
    args: list[Any] = []
    for w in WINDOWS:
        args += [community_id, w, r.ts(window_start(w, at)), member_id, points, r.ts(at)]
    await r.execute(SCORE_UPSERT, *args)


async def join(r: Raw, raid_id: int, m: MemberRef, now: datetime) -> None:
    await r.begin()
    try:
        await _join(r, raid_id, m, now)
    except BaseException:
        await r.rollback()
        raise
    await r.commit()


async def _join(r: Raw, raid_id: int, m: MemberRef, now: datetime) -> None:
    raid = await _open_raid(r, raid_id, now)
    community_id, session_id = raid[1], raid[2]
    ident = await r.fetchrow(
        "SELECT member_id, username FROM member_identities WHERE platform = ? AND external_id = ?", m.platform, m.external_id
    )
    if ident is None:
        name = (m.display_name or m.username or f"{m.platform}:{m.external_id}")[:128]
        member_id = await r.fetchval(
            "INSERT INTO members (display_name, x_handle_verified, created_at) VALUES (?, ?, ?) RETURNING id",
            name, False, r.ts(now),
        )
        await r.execute(
            "INSERT INTO member_identities (member_id, platform, external_id, username) VALUES (?, ?, ?, ?)",
            member_id, m.platform, m.external_id, m.username,
        )
    else:
        member_id = ident[0]
    await r.execute(
        "INSERT INTO community_members (community_id, member_id, is_moderator, excluded, last_seen_at) "
        "VALUES (?, ?, ?, ?, ?) ON CONFLICT (community_id, member_id) DO UPDATE SET "
        "is_moderator = excluded.is_moderator, last_seen_at = excluded.last_seen_at",
        community_id, member_id, False, False, r.ts(now),
    )
    existing, banned = await r.fetchrow(
        "SELECT (SELECT join_position FROM raid_participants WHERE raid_id = ? AND member_id = ?), "
        "EXISTS (SELECT id FROM bans WHERE community_id = ? AND member_id = ?)",
        raid_id, member_id, community_id, member_id,
    )
    if existing is not None:
        return
    if banned:
        raise Refused("banned")
    rules = _rules(raid[16])
    position = await r.fetchval(
        "UPDATE raid_sessions SET participant_count = participant_count + 1, points_awarded = points_awarded + "
        "CASE WHEN participant_count < ? THEN ? ELSE 0 END "
        "WHERE id = ? AND status = 'active' AND participant_count < max_participants RETURNING participant_count",
        rules.early_joiners, rules.early_joiner_points, raid_id,
    )
    if position is None:
        raise Refused("raid full")
    bonus = scoring.early_joiner_bonus(rules, position)
    await r.fetchval(
        "INSERT INTO raid_participants (raid_id, member_id, join_position, joined_at, points, claims_count, "
        "completed_all, last_scored_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
        "ON CONFLICT (raid_id, member_id) DO NOTHING RETURNING id",
        raid_id, member_id, position, r.ts(now), bonus, 0, False, r.ts(now) if bonus else None,
    )
    if bonus:
        await _credit(r, community_id, member_id, bonus, now)
    if session_id:
        await r.execute(ACTIVITY, session_id, "raid_joined", r.ts(now),
                        r.json({"memberId": member_id, "position": position}))


async def claim(r: Raw, raid_id: int, m: MemberRef, action: str, now: datetime) -> None:
    await r.begin()
    try:
        await _claim(r, raid_id, m, action, now)
    except BaseException:
        await r.rollback()
        raise
    await r.commit()


# The raid, the member's participation, a ban and the abuse screen's facts in one statement.
CLAIM_CONTEXT = (
    "SELECT r.id, r.community_id, r.session_id, r.status, r.started_at, r.ends_at, r.scoring, p.id, p.member_id, "
    "EXISTS (SELECT id FROM bans b WHERE b.community_id = r.community_id AND b.member_id = p.member_id), "
    "(SELECT a.id FROM raid_actions a WHERE a.participant_id = p.id AND a.action_type = ?), "
    "(SELECT c.settings FROM communities c WHERE c.id = r.community_id), "
    "(SELECT count(a.id) FROM raid_actions a WHERE a.member_id = p.member_id AND a.source = 'claim' "
    "AND a.claimed_at > ?), "
    "(SELECT x.x_handle FROM members x WHERE x.id = p.member_id), "
    "(SELECT x.x_handle_verified FROM members x WHERE x.id = p.member_id) "
    "FROM raid_sessions r LEFT JOIN (raid_participants p JOIN member_identities i ON i.member_id = p.member_id "
    "AND i.platform = ? AND i.external_id = ?) ON p.raid_id = r.id WHERE r.id = ?"
)


async def _claim(r: Raw, raid_id: int, m: MemberRef, action: str, now: datetime) -> None:
    ctx = await r.fetchrow(CLAIM_CONTEXT, action, r.ts(now - timedelta(minutes=1)), m.platform, m.external_id,
                           raid_id)
    if ctx is None or ctx[3] != "active" or r.parse_ts(ctx[5]) <= now:
        raise Refused(f"raid {raid_id} is not open")
    community_id, session_id, participant_id, member_id = ctx[1], ctx[2], ctx[7], ctx[8]
    if participant_id is None:
        raise Refused("not a participant")
    if ctx[9]:
        raise Refused("banned")
    # As core: a raid's objective targets and points are fixed at its start, kept per connection.
    cached = r.__dict__.setdefault("objectives", {})
    objectives = cached.get(raid_id) or {
        row[0]: (row[1], row[2])
        for row in await r.fetchall("SELECT action_type, target, points FROM raid_objectives WHERE raid_id = ?", raid_id)
    }
    if action not in objectives:
        raise Refused("unknown objective")
    if ctx[10] is None and ctx[12] >= 30:  # the claim-rate screen (raids.claims_per_minute, default 30)
        raise Refused("claiming too fast")
    verification = "unverifiable"  # the honor tier, as the burst's raid runs
    rules = _rules(ctx[6])
    points = scoring.claim_points(rules, objectives[action][1], r.parse_ts(ctx[4]), now)
    claim_id = await r.fetchval(
        "INSERT INTO raid_actions (raid_id, participant_id, member_id, action_type, verification, points, proof_url, "
        "source, claimed_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
        "ON CONFLICT (participant_id, action_type) DO NOTHING RETURNING id",
        raid_id, participant_id, member_id, action, verification, points, None, "claim", r.ts(now),
    )
    if claim_id is None:
        await r.fetchrow("SELECT id, verification, points FROM raid_actions WHERE participant_id = ? AND action_type = ?",
                         participant_id, action)
        return
    cached[raid_id] = objectives
    if session_id:
        await r.execute(ACTIVITY, session_id, "raid_action", r.ts(now),
                        r.json({"memberId": member_id, "action": action, "verification": verification}))
    claims = await r.fetchval(
        "UPDATE raid_participants SET points = points + ?, claims_count = claims_count + 1, last_scored_at = ? "
        "WHERE id = ? RETURNING claims_count",
        points, r.ts(now), participant_id,
    )
    bonus = 0
    if claims == len(objectives) and rules.completion_points:
        done = await r.fetchval(
            "UPDATE raid_participants SET completed_all = ?, points = points + ? WHERE id = ? AND completed_all = ? "
            "RETURNING id",
            True, rules.completion_points, participant_id, False,
        )
        bonus = rules.completion_points if done else 0
    await _credit(r, community_id, member_id, points + bonus, now)
    count = await r.fetchval(
        "UPDATE raid_objectives SET count = count + 1 WHERE raid_id = ? AND action_type = ? RETURNING count",
        raid_id, action,
    )
    await r.execute(
        "UPDATE raid_sessions SET action_count = action_count + 1, points_awarded = points_awarded + ? WHERE id = ?",
        points + bonus, raid_id,
    )
    if count == objectives[action][0]:
        await r.fetchval("SELECT count(*) FROM raid_objectives WHERE raid_id = ? AND count < target", raid_id)


async def batch(r: Raw, raid_id: int, members: list[MemberRef], actions: tuple[str, ...], now: datetime) -> None:
    """Every row the burst leaves behind, written in one transaction with bulk inserts."""
    await r.begin()
    raid = await _open_raid(r, raid_id, now)
    community_id, session_id, rules = raid[1], raid[2], _rules(raid[16])
    started = r.parse_ts(raid[6])
    obj_points = dict(await r.fetchall("SELECT action_type, points FROM raid_objectives WHERE raid_id = ?", raid_id))
    n_objectives = len(obj_points)
    first = [int(await r.fetchval(f"SELECT coalesce(max(id), 0) FROM {t}")) + 1
             for t in ("members", "member_identities", "raid_participants", "raid_actions")]
    ts = r.ts(now)
    mem, ident, cm, part, acts, scores, activity = [], [], [], [], [], [], []
    total = 0
    for i, m in enumerate(members):
        member_id, participant_id, position = first[0] + i, first[2] + i, i + 1
        mem.append((member_id, m.display_name, None, False, ts))
        ident.append((first[1] + i, member_id, m.platform, m.external_id, m.username))
        cm.append((community_id, member_id, False, False, ts))
        points = scoring.early_joiner_bonus(rules, position)
        activity.append((session_id, "raid_joined", ts, r.json({"memberId": member_id, "position": position})))
        for k, action in enumerate(actions):
            p = scoring.claim_points(rules, obj_points[action], started, now)
            points += p
            acts.append((first[3] + i * len(actions) + k, raid_id, participant_id, member_id, action, "unverifiable", p,
                         None, "claim", ts))
            activity.append((session_id, "raid_action", ts,
                             r.json({"memberId": member_id, "action": action, "verification": "unverifiable"})))
        completed = len(actions) == n_objectives and rules.completion_points > 0
        points += rules.completion_points if completed else 0
        total += points
        part.append((participant_id, raid_id, member_id, position, ts, points, len(actions), completed, ts))
        scores += [(community_id, w, r.ts(window_start(w, now)), member_id, points, ts) for w in WINDOWS]
    await r.load("members", ("id", "display_name", "x_handle", "x_handle_verified", "created_at"), mem)
    await r.load("member_identities", ("id", "member_id", "platform", "external_id", "username"), ident)
    await r.load("community_members", ("community_id", "member_id", "is_moderator", "excluded", "last_seen_at"), cm)
    await r.load("raid_participants", ("id", "raid_id", "member_id", "join_position", "joined_at", "points",
                                       "claims_count", "completed_all", "last_scored_at"), part)
    await r.load("raid_actions", ("id", "raid_id", "participant_id", "member_id", "action_type", "verification",
                                  "points", "proof_url", "source", "claimed_at"), acts)
    await r.load("member_scores", ("community_id", "window", "window_start", "member_id", "points", "last_scored_at"),
                 scores)
    await r.load("session_activity_log", ("session_id", "activity_type", "at", "data"), activity)
    await r.execute(
        "UPDATE raid_sessions SET participant_count = participant_count + ?, action_count = action_count + ?, "
        "points_awarded = points_awarded + ? WHERE id = ?",
        len(members), len(acts), total, raid_id,
    )
    await r.executemany("UPDATE raid_objectives SET count = count + ? WHERE raid_id = ? AND action_type = ?",
                        [(len(members), raid_id, a) for a in actions])
    await r.commit()
