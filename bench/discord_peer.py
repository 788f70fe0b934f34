"""The Discord side of the chat-budget benchmark, in its own process: the fake Discord API (REST and the
gateway websocket, tests/fakes/discord_api.py, with all its rules) and the press generator.

The bot (nubi's real discord.py client and services) runs in the benchmark's process and reaches this one
over 127.0.0.1 only, as in production: it logs in over REST and keeps a real gateway session; every
INTERACTION_CREATE goes out over that websocket and every answer comes back as an HTTP request. So the
fake's own work (recorded calls, stored messages, its connections, its garbage) is not in the bot's
process or event loop.

Every time here is this process's `time.monotonic()`: a press is timed from just before its
INTERACTION_CREATE is written to the gateway socket to the moment the fake has read the interaction
callback's request. That includes both loopback hops and discord.py's gateway read (inflate, JSON
parse): stricter than the bot-side "parsed to answered".

The parent drives it with one JSON object a line on stdin and reads one JSON answer a line on stdout:
`python -m bench.discord_peer`, then the ops below (see `Peer.handle`).
"""

from __future__ import annotations

import asyncio
import gc
import json
import sys
import time
from typing import Any

from discord import Permissions

from bench.env import open_loop
from tests.fakes.discord_api import (
    DEFAULT_MEMBER_PERMISSIONS,
    CallbackType,
    FakeDiscordAPI,
    RecordedCall,
    component_interaction,
    guild_create_payload,
    member_payload,
    slash_command_interaction,
    text_channel_payload,
)

CLAIMS = ("like", "repost", "reply")


class _Fake(FakeDiscordAPI):
    """The fake, unchanged in what it answers; it also wakes whoever waits for an interaction's answer."""

    def __init__(self) -> None:
        super().__init__()
        self.waiting: dict[int, asyncio.Future[float]] = {}

    def _interaction_callback(self, call: RecordedCall, interaction_id: str, token: str) -> Any:
        response = super()._interaction_callback(call, interaction_id, token)
        future = self.waiting.pop(int(interaction_id), None)
        if future is not None and not future.done():
            future.set_result(call.at)
        return response


class Peer:
    def __init__(self, guild: int, channel: int, mod: int) -> None:
        self.guild, self.channel, self.mod = guild, channel, mod
        self.fake = _Fake()
        self.fake.add_guild(guild_create_payload(
            guild, channels=[text_channel_payload(channel, guild_id=guild, name="raids")],
            members=[member_payload(mod, username="mod")]))
        self.post: dict[str, Any] | None = None

    async def press(self, payload: dict[str, Any], give_up_after: float) -> tuple[int, float, float | None]:
        """Send one INTERACTION_CREATE over the gateway; (id, sent, answered or None)."""
        interaction_id = int(payload["id"])
        answered: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        self.fake.waiting[interaction_id] = answered
        self.fake.register_interaction(payload)
        sent = time.monotonic()
        await self.fake.gateway.dispatch("INTERACTION_CREATE", payload)
        try:
            at: float | None = await asyncio.wait_for(answered, give_up_after)
        except TimeoutError:
            at = None
            self.fake.waiting.pop(interaction_id, None)
        return interaction_id, sent, at

    def _button(self, data: str, user_id: int, name: str) -> dict[str, Any]:
        assert self.post is not None
        return component_interaction(data, self.post, guild_id=self.guild, channel_id=self.channel,
                                     user_id=user_id, username=name)

    async def handle(self, op: str, args: dict[str, Any]) -> Any:
        fake = self.fake
        if op == "hello":
            await fake.start()
            return {"base_url": fake.base_url, "gateway_url": fake.gateway_url, "token": fake.token}
        if op == "raid_start":  # the moderator's /raid start; answers the raid post
            payload = slash_command_interaction(
                "raid start", args["options"], guild_id=self.guild, channel_id=self.channel, user_id=self.mod,
                username="mod", permissions=DEFAULT_MEMBER_PERMISSIONS | Permissions(manage_guild=True).value)
            _, _, at = await self.press(payload, 30)
            if at is None:
                raise RuntimeError("/raid start was not answered")
            for _ in range(1500):  # the post is sent before the answer, or right after it
                if fake.channel_messages(self.channel):
                    break
                await asyncio.sleep(0.02)
            [post] = fake.channel_messages(self.channel)
            self.post = post.json
            gc.collect()
            gc.freeze()  # the seeded state and the server, out of the collector's sight
            gc.disable()  # and no pauses here while presses are in flight (a short run; collected between phases)
            return {"post_id": post.id, "mark": len(fake.calls)}
        if op == "waves":  # each wave of N presses written at once; waits for each wave's answers
            presses: list[tuple[int, float, float | None]] = []
            for data in [f"nubi:join:{args['raid_id']}"] + [f"nubi:claim:{args['raid_id']}:{a}" for a in CLAIMS]:
                wave = [self._button(data, args["base"] + i, f"r{i}") for i in range(args["members"])]
                presses += await asyncio.gather(*(self.press(p, args["give_up_after"]) for p in wave))
            gc.collect()
            return self._presses(presses)
        if op == "stream":  # open loop: member i arrives at i / rate s and presses Join, then each claim
            presses = []
            rate, count = args["members_per_second"], args["members"]

            async def member(user_id: int) -> None:
                for data in [f"nubi:join:{args['raid_id']}"] + [f"nubi:claim:{args['raid_id']}:{a}" for a in CLAIMS]:
                    presses.append(await self.press(self._button(data, user_id, f"s{user_id}"), 60))

            await open_loop(count, rate, lambda i: member(args["base"] + i))
            gc.collect()
            return self._presses(presses)
        if op == "post":  # the raid post as the channel shows it now
            assert self.post is not None
            return fake.messages[int(self.post["id"])].json
        if op == "calls":  # channel writes since `mark`: (method, path, at, embed description or None)
            return [
                [c.method, c.path, c.at, (c.json or {}).get("embeds", [{}])[0].get("description")
                 if isinstance(c.json, dict) and c.json.get("embeds") else None]
                for c in fake.calls[args["mark"]:]
                if c.path.startswith(f"/channels/{self.channel}/messages") and c.method in ("POST", "PATCH")
                and c.status == 200
            ]
        if op == "check":  # what the fake refused or did not know, and the deferred answers
            ids = set(args["ids"])
            return {
                "unhandled": len(fake.unhandled_calls()),
                "refused": sum(1 for c in fake.calls[args["mark"]:] if c.status >= 400),
                "deferred": sum(1 for c in fake.callbacks
                                if c.interaction_id in ids and c.type == CallbackType.DEFERRED_CHANNEL_MESSAGE),
                "double": len(fake.callbacks) - len({c.interaction_id for c in fake.callbacks}),
            }
        if op == "stop":
            await fake.stop()
            return None
        raise ValueError(f"unknown op {op!r}")

    @staticmethod
    def _presses(presses: list[tuple[int, float, float | None]]) -> list[list[Any]]:
        return [[i, sent, at] for i, sent, at in presses]


async def main() -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 20)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    first = json.loads(await reader.readline())
    peer = Peer(first["guild"], first["channel"], first["mod"])
    op, args = "hello", first
    while True:
        try:
            result: Any = {"ok": await peer.handle(op, args)}
        except Exception as error:  # reported to the parent, which stops the benchmark with it
            result = {"error": f"{type(error).__name__}: {error}"}
        sys.stdout.write(json.dumps(result) + "\n")
        sys.stdout.flush()
        if op == "stop":
            return
        line = await reader.readline()
        if not line:
            await peer.fake.stop()
            return
        request = json.loads(line)
        op, args = request["op"], request.get("args", {})


if __name__ == "__main__":
    asyncio.run(main())
