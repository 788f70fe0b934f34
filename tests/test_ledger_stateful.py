"""Random sequences of everything that moves points, with the clock crossing day, week and month
boundaries, on both databases. After every step: every board in every window equals the ledger, every
raid's counters equal its accepted claims, no raid passes its cap, and claims hold exactly the points
their state allows.

Hypothesis drives the rules from a worker thread; each rule runs its coroutine on the test's own event
loop (where the services and their database live) and waits for it.
"""

from __future__ import annotations

import asyncio
from collections import Counter, defaultdict
from collections.abc import Coroutine
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from sqlalchemy import select

from core.clock import FakeClock
from core.directory import ChatRef, MemberRef
from core.errors import NubiError
from core.raids.model import RaidSpec
from core.raids.scoring import ScoringRules
from core.services import Services
from core.storage.ledger_models import PointsEntry
from core.storage.models import Raid, RaidAction, RaidObjective, RaidParticipant
from tests.ledger_check import assert_boards_equal_ledger

T = TypeVar("T")
ACTIONS = ("like", "repost", "reply")
MEMBERS = 5
# Some actions, or every action (so members often complete a raid's set and earn its bonus).
CLAIMS = st.one_of(st.just(list(ACTIONS)), st.lists(st.sampled_from(ACTIONS), max_size=3))
# Midnights where a month and a week begin together, a month alone, a week alone, a day alone.
BOUNDARIES = (datetime(2026, 6, 1, tzinfo=UTC), datetime(2027, 3, 1, tzinfo=UTC), datetime(2026, 1, 1, tzinfo=UTC),
              datetime(2026, 1, 12, tzinfo=UTC), datetime(2026, 1, 7, tzinfo=UTC))


class LedgerMachine(RuleBasedStateMachine):
    services: Services
    loop: asyncio.AbstractEventLoop
    runs = 0

    def __init__(self) -> None:
        super().__init__()
        LedgerMachine.runs += 1
        self.tag = f"r{LedgerMachine.runs}"  # each example gets its own chats and members in the shared database
        self.clock: FakeClock = self.services.clock  # type: ignore[assignment]
        self.chats = [ChatRef("telegram", f"-{self.tag}-{c}", f"chat {c}") for c in range(2)]
        self.members = [MemberRef("telegram", f"{self.tag}-{i}", f"m{i}") for i in range(MEMBERS)]
        self.raids: list[int] = []
        self.active: list[int] = []  # raids still running, as of the last start, end or wait
        self.communities: dict[int, int] = {}  # chat index -> community id
        self.member_ids: dict[int, int] = {}  # member index -> member id
        self.seats: list[tuple[int, int]] = []  # (raid, member index) joined
        self.pending: list[int] = []  # claims that waited for review, when claimed
        self.accepted: list[int] = []  # claims that counted, when claimed or reviewed
        self.seat_of: dict[int, tuple[int, int]] = {}  # claim -> (raid, member index)
        self.completed: list[tuple[int, int]] = []  # seats whose claims earned the completion bonus

    def raid(self, pick: int) -> int:
        """Mostly a running raid, sometimes any raid (acting on an ended one must be refused)."""
        choices = self.active if self.active and pick % 5 else self.raids
        return choices[pick % len(choices)]

    def refresh(self) -> None:
        ids = self.raids

        async def op() -> list[int]:
            return list(await self.services.db.read(lambda s: s.scalars(
                select(Raid.id).where(Raid.id.in_(ids), Raid.status == "active").order_by(Raid.id))))

        self.active = self.run(op())

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=60)

    def attempt(self, coro: Coroutine[Any, Any, T]) -> T | None:
        """A refusal (raid full or ended, nothing to revoke...) is an answer, not a failure."""
        try:
            return self.run(coro)
        except NubiError:
            return None

    @initialize(boundary=st.sampled_from(BOUNDARIES), before=st.integers(5, 240))
    def set_clock(self, boundary: datetime, before: int) -> None:
        """Start a little before a boundary, so the steps that follow cross it with raids running."""
        self.clock.set(boundary - timedelta(minutes=before))

    # -- rules ---------------------------------------------------------------------------------------

    @precondition(lambda self: len(self.active) < 2)
    @rule(chat=st.integers(0, 1), wanted=st.sets(st.sampled_from(ACTIONS), min_size=1),
          cap=st.integers(1, 4), tier=st.sampled_from(("honor", "review")))
    def start_raid(self, chat: int, wanted: set[str], cap: int, tier: str) -> None:
        spec = RaidSpec("https://x.com/nubi/status/42", dict.fromkeys(sorted(wanted), 2), duration_seconds=24 * 3600,
                        max_participants=cap, replace=True, verification=tier)
        progress = self.run(self.services.raids.start(self.chats[chat], spec))
        self.raids.append(progress.id)
        self.communities[chat] = progress.community_id
        self.refresh()

    @precondition(lambda self: self.raids)
    @rule(who=st.lists(st.integers(0, MEMBERS - 1), min_size=1, max_size=3, unique=True), pick=st.integers(0, 50),
          actions=CLAIMS)
    def join(self, who: list[int], pick: int, actions: list[str]) -> None:
        """A few members join, then (mostly) claim at once, as members do."""
        raid_id = self.raid(pick)
        for i in who:
            joined = self.attempt(self.services.raids.join(raid_id, self.members[i]))
            if joined is not None:
                self.member_ids[i] = joined.member_id
                self.seats.append((raid_id, i))
            self._claim(raid_id, i, actions)

    @precondition(lambda self: any(seat[0] in self.active for seat in self.seats))
    @rule(pick=st.integers(0, 50), actions=CLAIMS)
    def claim(self, pick: int, actions: list[str]) -> None:
        """More claims by a member of a running raid (a claim without a seat is tried by `join`'s callers
        who were refused a seat: the raid full or ended)."""
        live = [seat for seat in self.seats if seat[0] in self.active]
        raid_id, who = live[pick % len(live)]
        self._claim(raid_id, who, actions)

    def _claim(self, raid_id: int, who: int, actions: list[str]) -> None:
        for action in actions:
            r = self.attempt(self.services.raids.claim(raid_id, self.members[who], action))
            if r is not None and not r.already:
                self.seat_of[r.claim_id] = (raid_id, who)
                (self.pending if r.verification == "pending" else self.accepted).append(r.claim_id)
                if r.completion_bonus:
                    self.completed.append((raid_id, who))

    @precondition(lambda self: self.pending)
    @rule(pick=st.integers(0, 50), accept=st.booleans())
    def review(self, pick: int, accept: bool) -> None:
        claim_id = self.pending[pick % len(self.pending)]
        r = self.attempt(self.services.raids.review(claim_id, accept))
        if r is not None and accept and not r.already:
            self.accepted.append(claim_id)
            if r.completion_bonus:
                self.completed.append(self.seat_of[claim_id])

    @precondition(lambda self: self.accepted)
    @rule(pick=st.integers(0, 1000))
    def revoke(self, pick: int) -> None:
        """A claim that counted, often one of a set that earned the completion bonus (any claim of
        the set, not only the one that completed it); now and then one revoked before, to be refused."""
        claims = self.accepted
        if self.completed and pick % 2:
            seat = self.completed[pick % len(self.completed)]
            claims = [c for c in self.accepted if self.seat_of.get(c) == seat]
        self.attempt(self.services.raids.revoke(claims[pick // 2 % len(claims)], reviewer_id=None, reason="audit"))

    @precondition(lambda self: self.member_ids and self.communities)
    @rule(who=st.integers(0, MEMBERS - 1), chat=st.integers(0, 1), amount=st.integers(-50, 50).filter(bool))
    def points(self, who: int, chat: int, amount: int) -> None:
        member_id = self.member_ids.get(who) or next(iter(self.member_ids.values()))
        community_id = self.communities.get(chat) or next(iter(self.communities.values()))
        self.run(self.services.moderation.adjust_points(community_id, member_id, amount, "by hand", actor=None))

    @precondition(lambda self: self.active)
    @rule(pick=st.integers(0, 50))
    def end(self, pick: int) -> None:
        self.run(self.services.raids.end(self.raid(pick)))
        self.refresh()

    @precondition(lambda self: self.raids)
    @rule(minutes=st.sampled_from((3, 7, 45, 6 * 60)))
    def wait(self, minutes: int) -> None:
        """Short steps across the boundary near which the run started; a few long ones end the raids."""
        self.clock.advance(minutes=minutes)
        self.run(self.services.raids.end_overdue())
        self.refresh()

    # -- invariants ----------------------------------------------------------------------------------

    @invariant()
    def boards_equal_the_ledger(self) -> None:
        self.run(assert_boards_equal_ledger(self.services, sorted(self.communities.values()), self.clock.now()))

    @invariant()
    def raids_hold_their_cap_and_their_counters(self) -> None:
        if self.raids:
            self.run(_check_raids(self.services, self.raids))


async def _check_raids(services: Services, raid_ids: list[int]) -> None:
    async def op(s: Any) -> tuple[Any, ...]:
        raids = (await s.scalars(select(Raid).where(Raid.id.in_(raid_ids)))).all()
        participants = (await s.scalars(select(RaidParticipant).where(RaidParticipant.raid_id.in_(raid_ids)))).all()
        claims = (await s.scalars(select(RaidAction).where(RaidAction.raid_id.in_(raid_ids)))).all()
        objectives = (await s.scalars(select(RaidObjective).where(RaidObjective.raid_id.in_(raid_ids)))).all()
        ledger = (await s.scalars(select(PointsEntry).where(PointsEntry.raid_id.in_(raid_ids)))).all()
        return raids, participants, claims, objectives, ledger

    raids, participants, claims, objectives, ledger = await services.db.read(op)
    seated = Counter(p.raid_id for p in participants)
    accepted = [c for c in claims if c.verification in ("verified", "accepted", "unverifiable")]
    per_raid: dict[int, int] = defaultdict(int)
    per_claim: dict[int, int] = defaultdict(int)
    for e in ledger:
        per_raid[e.raid_id] += e.points
        if e.claim_id is not None and e.kind != "completion_bonus" and not _reverses_completion(e, ledger):
            per_claim[e.claim_id] += e.points
    for r in raids:
        assert seated[r.id] == r.participant_count <= r.max_participants, (r.id, seated[r.id], r.max_participants)
        assert r.action_count == sum(1 for c in accepted if c.raid_id == r.id)
        assert r.points_awarded == per_raid[r.id], (r.id, r.points_awarded, per_raid[r.id])
    for o in objectives:
        assert o.count == sum(1 for c in accepted if (c.raid_id, c.action_type) == (o.raid_id, o.action_type))
    for c in claims:
        # pending and rejected claims hold no points; an accepted claim holds what the ledger credits it
        assert per_claim[c.id] == (c.points if c in accepted else 0) and (c in accepted or c.points == 0), c.id
    # The completion bonus is held exactly while the member's accepted claims cover every objective,
    # and every reversal takes back exactly the row it names, in that row's windows.
    wanted = Counter(o.raid_id for o in objectives)
    covered = Counter((c.raid_id, c.participant_id) for c in accepted)
    bonus: dict[tuple[int, int], int] = defaultdict(int)
    for e in ledger:
        if e.kind == "completion_bonus" or _reverses_completion(e, ledger):
            bonus[(e.raid_id, e.member_id)] += e.points
    completion = {r.id: ScoringRules.from_dict(r.scoring).completion_points for r in raids}
    for p in participants:
        assert p.claims_count == covered[(p.raid_id, p.id)]
        full = covered[(p.raid_id, p.id)] == wanted[p.raid_id]
        assert bonus[(p.raid_id, p.member_id)] == (completion[p.raid_id] if full else 0), (p.raid_id, p.member_id)
    by_id = {e.id: e for e in ledger}
    for e in ledger:
        if e.reverses_id is not None:
            undone = by_id[e.reverses_id]
            assert (e.points, e.effective_at, e.member_id) == (-undone.points, undone.effective_at, undone.member_id)


def _reverses_completion(entry: PointsEntry, ledger: Any) -> bool:
    if entry.reverses_id is None:
        return False
    return any(e.id == entry.reverses_id and e.kind == "completion_bonus" for e in ledger)


SETTINGS = settings(max_examples=10, stateful_step_count=25, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])


@pytest.mark.timeout(300)  # a shared 2-core machine: typically 30-60 s per database
async def test_every_board_equals_the_ledger_under_random_sequences(services: Services) -> None:
    LedgerMachine.services = services
    LedgerMachine.loop = asyncio.get_running_loop()
    await asyncio.to_thread(run_state_machine_as_test, LedgerMachine, settings=SETTINGS)
