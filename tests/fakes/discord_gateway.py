"""The fake Discord's gateway: a websocket on the fake's own port that speaks gateway v10.

What a client sees, per Discord's "Gateway" docs: Hello (op 10) with a heartbeat interval; Identify
(op 2) answered by READY and one GUILD_CREATE per guild, or closed with 4004 for a bad token;
Heartbeat (op 1) answered by Heartbeat ACK (op 11); Resume (op 6) answered by Invalid Session
(op 9, not resumable: this fake keeps no session to resume). With `compress=zlib-stream` in the URL
every frame is one zlib stream flushed with Z_SYNC_FLUSH, as Discord sends it. Dispatches (op 0)
carry a sequence number and go only to sessions whose intents cover the event.
"""

from __future__ import annotations

import asyncio
import json
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web

HEARTBEAT_INTERVAL_MS = 41_250
INTENT_BITS = {"guilds": 1 << 0, "guild_messages": 1 << 9}
EVENT_INTENTS = {  # events that need an intent; others (READY, INTERACTION_CREATE, ...) always flow
    "GUILD_CREATE": "guilds",
    "CHANNEL_UPDATE": "guilds",
    "MESSAGE_CREATE": "guild_messages",
    "MESSAGE_UPDATE": "guild_messages",
    "MESSAGE_DELETE": "guild_messages",
}
AUTHENTICATION_FAILED = 4004


@dataclass
class GatewaySession:
    ws: web.WebSocketResponse
    compressor: Any | None
    intents: int = 0
    identified: bool = False
    sequence: int = 0
    identify: dict[str, Any] = field(default_factory=dict)

    async def send(self, payload: Mapping[str, Any]) -> None:
        data = json.dumps(payload)
        if self.compressor is None:
            await self.ws.send_str(data)
        else:
            await self.ws.send_bytes(self.compressor.compress(data.encode()) + self.compressor.flush(zlib.Z_SYNC_FLUSH))

    async def dispatch(self, event: str, payload: Mapping[str, Any]) -> None:
        needed = EVENT_INTENTS.get(event)
        if needed is not None and not self.intents & INTENT_BITS[needed]:
            return
        self.sequence += 1
        await self.send({"op": 0, "s": self.sequence, "t": event, "d": payload})


class FakeGateway:
    """Serves gateway connections for a FakeDiscordAPI (which supplies the token and the READY state)."""

    def __init__(self, token: Callable[[], str], ready: Callable[[], dict[str, Any]],
                 guilds: Callable[[], list[dict[str, Any]]]) -> None:
        self._token = token
        self._ready = ready
        self._guilds = guilds
        self.sessions: list[GatewaySession] = []
        self.identified = asyncio.Event()
        self._sends: set[asyncio.Task[None]] = set()
        self._last: asyncio.Task[None] | None = None  # echoes go out in the order the writes happened

    async def handle(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        compressed = request.query.get("compress") == "zlib-stream"
        session = GatewaySession(ws, zlib.compressobj() if compressed else None)
        await session.send({"op": 10, "s": None, "t": None, "d": {"heartbeat_interval": HEARTBEAT_INTERVAL_MS}})
        try:
            async for message in ws:
                if message.type is not WSMsgType.TEXT:
                    continue
                frame = json.loads(message.data)
                if frame.get("op") == 1:
                    await session.send({"op": 11, "s": None, "t": None, "d": None})
                elif frame.get("op") == 2:
                    if frame["d"].get("token") != self._token():
                        await ws.close(code=AUTHENTICATION_FAILED, message=b"Authentication failed.")
                        break
                    await self._identify(session, frame["d"])
                elif frame.get("op") == 6:
                    await session.send({"op": 9, "s": None, "t": None, "d": False})
        finally:
            if session in self.sessions:
                self.sessions.remove(session)
        return ws

    async def _identify(self, session: GatewaySession, identify: dict[str, Any]) -> None:
        session.identify = identify
        session.intents = int(identify.get("intents", 0))
        session.identified = True
        self.sessions.append(session)
        ready = self._ready()
        if identify.get("shard"):
            ready["shard"] = identify["shard"]
        await session.dispatch("READY", ready)
        for guild in self._guilds():
            await session.dispatch("GUILD_CREATE", guild)
        self.identified.set()

    async def dispatch(self, event: str, payload: Mapping[str, Any]) -> None:
        """Push an event to every identified session (e.g. INTERACTION_CREATE)."""
        for session in list(self.sessions):
            await session.dispatch(event, payload)

    def echo(self, event: str, payload: Mapping[str, Any]) -> None:
        """A REST write's echo, sent in order from synchronous code."""
        if not self.sessions:
            return
        previous = self._last

        async def send() -> None:
            if previous is not None:
                await asyncio.gather(previous, return_exceptions=True)
            await self.dispatch(event, payload)

        task = asyncio.get_running_loop().create_task(send())
        self._last = task
        self._sends.add(task)
        task.add_done_callback(self._sends.discard)

    async def close(self) -> None:
        for session in list(self.sessions):
            await session.ws.close()
        await asyncio.gather(*self._sends, return_exceptions=True)
