"""The webhook endpoint: a small ASGI app that hands Telegram's updates to the PTB Application.

Every request must carry the secret given to setWebhook in X-Telegram-Bot-Api-Secret-Token;
anything else is refused with 403 before its body is read. It answers on any path, so it works
mounted (`app.mount(...)`) or added as a route for one exact path.
"""

from __future__ import annotations

import hmac
import logging
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from telegram import Update
from telegram.ext import Application

log = logging.getLogger(__name__)

SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"


def webhook_app(application: Application[Any, Any, Any, Any, Any, Any], secret: str) -> Starlette:
    expected = secret.encode()

    async def receive(request: Request) -> Response:
        given = request.headers.get(SECRET_HEADER, "").encode()
        if not hmac.compare_digest(given, expected):
            return JSONResponse({"ok": False, "error": "forbidden"}, status_code=403)
        try:
            data = await request.json()
            if not isinstance(data, dict) or not isinstance(data.get("update_id"), int):
                raise ValueError("not an Update object")
            update = Update.de_json(data, application.bot)
        except (ValueError, TypeError, AttributeError, KeyError) as exc:  # JSONDecodeError is a ValueError
            log.warning("webhook: unreadable update: %s", exc)
            return JSONResponse({"ok": False, "error": "bad update"}, status_code=400)
        await application.update_queue.put(update)
        return JSONResponse({"ok": True})

    return Starlette(routes=[Route("/{path:path}", receive, methods=["POST"])])
