"""Core views drawn the Discord way: embeds for raid posts, reports and boards, plain text for the rest.

Lines from core are plain text, so they are escaped for Discord markdown here (links are left alone:
escaping them would break the URL). Discord's limits are applied by truncation, never by an error.
"""

from __future__ import annotations

from typing import Any

import discord
from discord.utils import escape_markdown

from core.commands.service import Reply
from core.i18n import _
from core.views import View

from .views import raid_buttons

TITLE_LIMIT = 256
DESCRIPTION_LIMIT = 4096
CONTENT_LIMIT = 2000

COLORS = {
    "info": discord.Color.blurple(),
    "live": discord.Color.green(),
    "success": discord.Color.gold(),
    "warning": discord.Color.orange(),
    "danger": discord.Color.red(),
}
EMBED_KINDS = ("raid", "report", "leaderboard")


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def escape(text: str) -> str:
    return escape_markdown(text, ignore_links=True)


def embed(view: View) -> discord.Embed:
    """A view as an embed: title (linked to the view's URL), escaped lines, colour by the view's mood."""
    description = "\n".join(escape(line) for line in view.lines)
    return discord.Embed(
        title=_clip(view.title, TITLE_LIMIT) or None,
        description=_clip(description, DESCRIPTION_LIMIT) or None,
        url=view.url if view.url and view.url.startswith(("https://", "http://")) else None,
        color=COLORS.get(view.color, COLORS["info"]),
    )


def text(view: View) -> str:
    """A view as message content: the title in bold, then the escaped lines."""
    body = "\n".join(escape(line) for line in view.lines)
    if view.title:
        body = f"**{escape(view.title)}**\n{body}" if body else f"**{escape(view.title)}**"
    return _clip(body, CONTENT_LIMIT)


def message(view: View) -> dict[str, Any]:
    """Keyword arguments for send/edit: an embed (with the raid buttons, if any) or plain content."""
    if view.kind not in EMBED_KINDS:
        return {"content": text(view)}
    parts: dict[str, Any] = {"embed": embed(view)}
    buttons = raid_buttons(view.buttons)
    if buttons is not None:
        parts["view"] = buttons
    return parts


def quiet_ack(reply: Reply, jump_url: str | None = None) -> str:
    """What the member who asked sees when the answer itself went to the channel as an event post."""
    if reply.raid is not None:
        if jump_url:
            return _("Raid #{id} is live: the raid post is {url}.").format(id=reply.raid.id, url=jump_url)
        return _("Raid #{id} is live: the raid post is in this channel.").format(id=reply.raid.id)
    if reply.view.kind == "report":
        title = escape(reply.view.title.split(" — ")[0])  # "Raid #N report", without why it ended
        if jump_url:
            return _("{title} is {url}.").format(title=title, url=jump_url)
        return _("{title} is in this channel.").format(title=title)
    return text(reply.view)


def post_refused(raid_id: int, reason: str) -> str:
    """The moderator's answer when Discord refused the raid post: the raid did not go live."""
    return _("Raid #{id} was cancelled: Discord refused its post in this channel ({reason}). "
             "Check that my role can view this channel, send messages, embed links and read message history "
             "here, then start it again.").format(id=raid_id, reason=escape(reason))


def post_pending(raid_id: int) -> str:
    """The raid post has not reached the channel yet (Discord was busy): it is on its way, not live."""
    return _("Raid #{id} started; its post is on its way to this channel.").format(id=raid_id)
