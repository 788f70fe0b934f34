"""Group commit on both databases: commands that arrive together share a transaction, and no command
can spoil another's. Each op of a batch runs in a savepoint of its own (core/storage/executor.py);
these tests pin down what that must keep from one transaction per command: each caller gets its own
answer, an op that fails leaves nothing behind, a failing statement fails only its own op, and a row
read FOR UPDATE still keeps the ops that share it apart."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from sqlalchemy import func, select

from core.config import Settings
from core.directory import _NEW_IDENTITY, _NEW_MEMBER, ChatRef, MemberRef
from core.errors import NotParticipant
from core.raids.model import RaidSpec
from core.services import Services
from core.storage.models import Member, NubiSession, RaidAction
from core.storage.verification_models import XLink

CHAT = ChatRef("telegram", "-1009", "Batch Group")
URL = "https://x.com/nubi/status/77"
AGENT = Settings().agents[0].id


def member(i: int) -> MemberRef:
    return MemberRef("telegram", str(5000 + i), f"batcher{i}", f"batcher{i}")


def new_member(name: str, now: object):  # type: ignore[no-untyped-def]
    async def op(s):  # type: ignore[no-untyped-def]
        return await s.scalar(_NEW_MEMBER, {"b_name": name, "b_now": now})

    return op


async def count_members(services: Services, name: str) -> int:
    async def op(s):  # type: ignore[no-untyped-def]
        return await s.scalar(select(func.count()).select_from(Member).where(Member.display_name == name))

    return await services.db.read(op)


async def test_commands_arriving_together_share_commits(services: Services) -> None:
    raid = (await services.raids.start(CHAT, RaidSpec(URL, {"like": 500}), by=member(0))).id
    await asyncio.gather(*(services.raids.join(raid, member(i)) for i in range(1, 121)))
    before = services.db.commits
    results = await asyncio.gather(*(services.raids.claim(raid, member(i), "like") for i in range(1, 121)))
    assert sorted(r.member_id for r in results) == sorted({r.member_id for r in results})  # each its own answer
    assert all(r.verification == "unverifiable" and not r.already for r in results)
    assert (await services.raids.progress(raid)).objectives[0].count == 120
    # 120 claims issued at once land in a few batches, not 120 transactions
    assert 1 <= services.db.commits - before <= 8


async def test_an_op_failing_before_it_writes_fails_alone(services: Services, clock) -> None:  # type: ignore[no-untyped-def]
    raid = (await services.raids.start(CHAT, RaidSpec(URL, {"like": 50}), by=member(0))).id
    for i in range(1, 11):
        await services.raids.join(raid, member(i))
    outcomes = await asyncio.gather(
        *(services.raids.claim(raid, member(i), "like") for i in range(1, 21)), return_exceptions=True
    )
    assert [type(o) for o in outcomes[10:]] == [NotParticipant] * 10  # never joined
    assert all(not isinstance(o, Exception) for o in outcomes[:10])
    assert (await services.raids.progress(raid)).objectives[0].count == 10


async def test_an_op_failing_after_it_wrote_leaves_nothing(services: Services, clock) -> None:  # type: ignore[no-untyped-def]
    now = clock.now()

    def doomed(name: str):  # type: ignore[no-untyped-def]
        async def op(s):  # type: ignore[no-untyped-def]
            await s.scalar(_NEW_MEMBER, {"b_name": name, "b_now": now})
            raise LookupError("changed my mind")

        return op

    ops = [new_member("kept", now) if i % 3 else doomed("doomed") for i in range(30)]
    outcomes = await asyncio.gather(*(services.db.write(op) for op in ops), return_exceptions=True)
    assert sum(isinstance(o, LookupError) for o in outcomes) == 10
    assert len({o for o in outcomes if isinstance(o, int)}) == 20  # 20 distinct new member ids
    assert await count_members(services, "doomed") == 0
    assert await count_members(services, "kept") == 20


async def test_a_failing_statement_fails_only_its_op(services: Services, clock) -> None:  # type: ignore[no-untyped-def]
    now = clock.now()
    dialect = "sqlite" if services.db.is_sqlite else "postgresql"

    async def orphan(s):  # type: ignore[no-untyped-def]
        # an identity for a member that does not exist: the foreign key refuses it
        return await s.scalar(_NEW_IDENTITY[dialect], {
            "b_member_id": 987_654_321, "b_platform": "telegram", "b_external_id": "orphan", "b_username": None,
        })

    ops = [new_member("sibling", now) for _ in range(20)]
    ops.insert(7, orphan)
    outcomes = await asyncio.gather(*(services.db.write(op) for op in ops), return_exceptions=True)
    failed = [o for o in outcomes if isinstance(o, Exception)]
    assert len(failed) == 1 and outcomes[7] is failed[0]
    assert "foreign key" in str(failed[0]).lower() or "constraint" in str(failed[0]).lower()
    assert await count_members(services, "sibling") == 20


async def test_rows_read_for_update_keep_ops_apart(services: Services) -> None:
    """Renewing reads the session FOR UPDATE and writes renewal_count + 1: thirty renewals at once
    must count thirty, even when they run in one batch on PostgreSQL."""
    info = await services.sessions.create(AGENT, str(uuid.uuid4()))
    before = services.db.commits
    await asyncio.gather(*(services.sessions.renew(info.id) for _ in range(30)))
    assert services.db.commits - before < 30  # they did share transactions

    async def count(s):  # type: ignore[no-untyped-def]
        return await s.scalar(select(NubiSession.renewal_count).where(NubiSession.id == info.id))

    assert await services.db.read(count) == 30
    kinds = [a["type"] for a in await services.sessions.activity(info.id)]
    assert kinds.count("renewed") == 30


async def test_orm_ops_run_in_the_same_batch_as_core_ones(services: Services, clock) -> None:  # type: ignore[no-untyped-def]
    now = clock.now()

    def orm_member(name: str):  # type: ignore[no-untyped-def]
        async def op(s):  # type: ignore[no-untyped-def]
            row = Member(display_name=name, x_handle_verified=False, created_at=now)
            s.add(row)
            await s.flush()
            return row.id

        return op

    ops = [orm_member("orm") if i % 2 else new_member("core", now) for i in range(40)]
    before = services.db.commits
    ids = await asyncio.gather(*(services.db.write(op) for op in ops))
    assert len(set(ids)) == 40
    assert services.db.commits - before <= 4
    assert await count_members(services, "orm") == 20 and await count_members(services, "core") == 20


async def test_duplicate_claims_in_one_batch_count_once(services: Services) -> None:
    raid = (await services.raids.start(CHAT, RaidSpec(URL, {"like": 50}), by=member(0))).id
    await services.raids.join(raid, member(1))
    results = await asyncio.gather(*(services.raids.claim(raid, member(1), "like") for _ in range(12)))
    assert sum(not r.already for r in results) == 1
    assert len({r.claim_id for r in results}) == 1

    async def claims(s):  # type: ignore[no-untyped-def]
        return await s.scalar(select(func.count()).select_from(RaidAction).where(RaidAction.raid_id == raid))

    assert await services.db.read(claims) == 1
    progress = await services.raids.progress(raid)
    assert progress.objectives[0].count == 1


@pytest.mark.parametrize("size", [2, 64])
async def test_batches_keep_arrival_order_for_the_cap(services: Services, size: int) -> None:
    raid = (await services.raids.start(CHAT, RaidSpec(URL, {"like": 5}, max_participants=size // 2 + 1),
                                       by=member(0))).id
    outcomes = await asyncio.gather(*(services.raids.join(raid, member(i)) for i in range(1, size + 1)),
                                    return_exceptions=True)
    joined = [o for o in outcomes if not isinstance(o, Exception)]
    assert sorted(o.position for o in joined) == list(range(1, size // 2 + 2))
    assert (await services.raids.progress(raid)).participants == size // 2 + 1


async def test_a_failing_flush_fails_only_its_op(services: Services, clock) -> None:  # type: ignore[no-untyped-def]
    now = clock.now()

    async def orphan_link(s):  # type: ignore[no-untyped-def]
        s.add(XLink(member_id=987_654_321, handle="nobody"))  # no such member: the flush fails
        await s.flush()

    ops = [new_member("neighbour", now) for _ in range(20)]
    ops.insert(5, orphan_link)
    outcomes = await asyncio.gather(*(services.db.write(op) for op in ops), return_exceptions=True)
    assert [i for i, o in enumerate(outcomes) if isinstance(o, Exception)] == [5]
    assert await count_members(services, "neighbour") == 20


# -- hand-written SQL ops (Database.write_sql): the same promises ---------------------------------

SQL_NEW_MEMBER = "INSERT INTO members (display_name, x_handle_verified, created_at) VALUES ($1, $2, $3) RETURNING id"
SQL_ORPHAN = "INSERT INTO member_identities (member_id, platform, external_id, username) VALUES ($1, $2, $3, $4)"


async def test_sql_ops_fail_alone_whether_before_or_after_writing(services: Services, clock) -> None:  # type: ignore[no-untyped-def]
    """A refusal before any write, a Python error after a write and a failing statement, mixed into one
    burst of SQL ops: each caller gets its own outcome, and nothing of a failed op is kept."""
    now = clock.now()

    def sql_member(name: str, fail: str | None = None):  # type: ignore[no-untyped-def]
        async def op(q):  # type: ignore[no-untyped-def]
            if fail == "before":
                raise LookupError("refused before writing")
            member_id = await q.value(SQL_NEW_MEMBER, name, False, q.ts(now))
            if fail == "after":
                raise LookupError("changed my mind")
            if fail == "statement":  # the foreign key refuses an identity of a member that does not exist
                await q.run(SQL_ORPHAN, 987_654_321, "telegram", f"orphan-{member_id}", None)
            return member_id

        return op

    kinds = [None, "before", None, "after", None, "statement"] * 6
    ops = [sql_member("kept" if k is None else "dropped", k) for k in kinds]
    before = services.db.commits
    outcomes = await asyncio.gather(*(services.db.write_sql(op) for op in ops), return_exceptions=True)
    for kind, outcome in zip(kinds, outcomes, strict=True):
        assert isinstance(outcome, int) if kind is None else isinstance(outcome, Exception), (kind, outcome)
    assert len({o for o in outcomes if isinstance(o, int)}) == 18
    assert await count_members(services, "kept") == 18
    assert await count_members(services, "dropped") == 0
    assert services.db.commits - before >= 1  # they did meet in a batch
