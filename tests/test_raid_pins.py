"""The platform-neutral part of pins and threads: the flag, the setting, the unpin owed at the end,
and the refusals that leave nothing behind. Real services on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from sqlalchemy import func, select

from adapters.http.app import create_app
from core.commands import parser as p
from core.directory import ChatRef
from core.errors import ValidationError
from core.outbox import unpin_key
from core.raids.model import RaidSpec
from core.services import Services
from core.storage.models import Raid
from core.storage.outbox_models import ChatPost

URL = "https://x.com/nubi/status/42"
TELEGRAM = ChatRef("telegram", "-100123", "Raiders")


@pytest.fixture
async def client(services: Services) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_app(services))
    async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as c:
        yield c


def test_the_text_command_takes_pin_and_nopin() -> None:
    assert p.parse(f"/raid start {URL} pin") == p.RaidStart(URL, pin=True)
    assert p.parse(f"/raid start {URL} nopin lock") == p.RaidStart(URL, lock=True, pin=False)
    assert p.parse(f"/raid start {URL}") == p.RaidStart(URL)  # pin None: the community decides


async def test_a_pinned_raid_owes_an_unpin_when_it_ends_and_an_unpinned_one_does_not(services: Services) -> None:
    pinned = await services.raids.start(TELEGRAM, RaidSpec(URL, {"like": 5}, pin=True))
    assert pinned.pin and pinned.as_dict()["pin"] is True
    assert not await services.outbox.pending(unpin_key(pinned.id))  # nothing owed while it runs
    plain = await services.raids.start(TELEGRAM, RaidSpec(URL, {"like": 5}, replace=True))  # ends the first
    assert not plain.pin
    assert await services.outbox.pending(unpin_key(pinned.id))
    await services.raids.end(plain.id)
    assert not await services.outbox.pending(unpin_key(plain.id))
    kinds = await services.db.read(lambda s: s.scalars(select(ChatPost.kind).order_by(ChatPost.id)))
    assert list(kinds) == ["raid", "raid", "report", "unpin", "report"]


async def test_the_pin_setting_is_the_default_and_the_flag_overrides_it(services: Services) -> None:
    first = await services.raids.start(TELEGRAM, RaidSpec(URL, {"like": 5}))
    await services.community_settings.change(first.community_id, {"pin": "true"}, actor=None)
    second = await services.raids.start(TELEGRAM, RaidSpec(URL, {"like": 5}, replace=True))
    third = await services.raids.start(TELEGRAM, RaidSpec(URL, {"like": 5}, replace=True, pin=False))
    assert [first.pin, second.pin, third.pin] == [False, True, False]
    with pytest.raises(ValidationError):
        await services.community_settings.change(first.community_id, {"pin": "sometimes"}, actor=None)
    assert (await services.community_settings.show(first.community_id))["effective"]["pin"] is True


async def test_a_thread_of_its_own_is_refused_where_it_cannot_be_and_nothing_is_written(services: Services) -> None:
    with pytest.raises(ValidationError, match="Only a Discord raid"):
        await services.raids.start(TELEGRAM, RaidSpec(URL, {"like": 5}, in_thread=True))
    discord = ChatRef("discord", "900", "Server", channel="901")
    assert await services.db.read(lambda s: s.scalar(select(func.count()).select_from(Raid))) == 0

    raid = await services.raids.start(discord, RaidSpec(URL, {"like": 5}, in_thread=True, lock=True))
    assert raid.lock and raid.in_thread  # the lock of a thread raid locks its thread (adapters/discord)
    assert await services.raids.move_to_thread(raid.id, "902")
    assert not await services.raids.move_to_thread(raid.id, "903")  # made once, whoever asks again
    moved = await services.raids.progress(raid.id)
    assert (moved.chat.channel, moved.thread) == ("902", "902")
    assert await services.raids.active_raid_id(ChatRef("discord", "900", channel="902")) == raid.id


async def test_rest_starts_a_pinned_raid(client: httpx.AsyncClient) -> None:
    body = {"community": {"platform": "telegram", "id": "-100123"}, "targetUrl": URL, "pin": True}
    r = await client.post("/api/raids", json=body)
    assert r.status_code == 201, r.text
    assert r.json()["pin"] is True
