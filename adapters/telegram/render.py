"""Core views drawn for Telegram: HTML text, inline keyboards, callback toasts and the command menu.

Every piece of text that comes from the core (names, URLs, reasons) is escaped here, in one place,
so a member called `<b>&evil</b>` can neither break a message nor format it.
"""

from __future__ import annotations

import html
from collections.abc import Iterable

from telegram import BotCommand, InlineKeyboardButton, InlineKeyboardMarkup

from core.commands.service import Reply
from core.i18n import _
from core.views import Button, View

MAX_TEXT = 4096  # Telegram's limit for a message
MAX_TOAST = 200  # and for the text of answerCallbackQuery
CLAIMS_PER_ROW = 3

# What the command menu shows; the command names themselves come from the core parser.
DESCRIPTIONS = {
    "join": "Join the active raid",
    "claim": "Claim an action you did",
    "leaderboard": "Show the leaderboard",
    "me": "Your points, rank and streak",
    "link": _("Link your X account, or your accounts on other platforms"),
    "help": "What I can do",
    "raid": "Start, end or check a raid",
    "unlock": "Lift the chat lock now",
    "ban": "Ban a member from raids",
    "unban": "Let a banned member raid again",
    "points": "Add or remove points",
    "schedule": "Schedule leaderboard posts",
    "review": "Review pending claims",
    "settings": "Show or change this community's settings",
    "member": _("Merge two accounts of one member"),
    "community": "Link this chat with other chats for partner raids",
}


def escape(text: str) -> str:
    return html.escape(text, quote=False)


def render_html(view: View) -> str:
    """The view as Telegram HTML: the title bold, every line escaped, cut to fit one message."""
    head = [f"<b>{escape(view.title)}</b>"] if view.title else []
    lines = [escape(line) for line in view.lines]
    text = "\n".join(head + lines)
    while len(text) > MAX_TEXT and lines:
        lines.pop()
        text = "\n".join([*head, *lines, "…"])
    return text


def _button(button: Button) -> InlineKeyboardButton:
    if button.action == "url":
        return InlineKeyboardButton(button.label, url=button.url)
    return InlineKeyboardButton(button.label, callback_data=button.custom_id)


def keyboard(buttons: Iterable[Button]) -> InlineKeyboardMarkup | None:
    """Join and Open post on top, the claim buttons below in rows of three, My stats last."""
    buttons = list(buttons)
    if not buttons:
        return None
    top = [b for b in buttons if b.action in ("join", "url")]
    claims = [b for b in buttons if b.action == "claim"]
    rest = [b for b in buttons if b.action not in ("join", "url", "claim")]
    rows = [top] + [claims[i : i + CLAIMS_PER_ROW] for i in range(0, len(claims), CLAIMS_PER_ROW)] + [rest]
    return InlineKeyboardMarkup([[_button(b) for b in row] for row in rows if row])


def toast(reply: Reply) -> str:
    """A button's answer: plain text (no markup in toasts), within Telegram's 200 characters."""
    text = reply.text.strip()
    return text if len(text) <= MAX_TOAST else text[: MAX_TOAST - 1] + "…"


def bot_commands(names: Iterable[str]) -> list[BotCommand]:
    return [BotCommand(name, DESCRIPTIONS.get(name, f"/{name}")) for name in names]
