"""What nubi needs from a Discord server, in one list: the invite URL, the pre-start check and the docs
(docs/discord.md) all come from `NEEDED`, so they cannot drift apart.

nubi asks for no Administrator: a server owner can see exactly what each permission is for. A raid is
only started where the bot holds what the raid needs in that channel (computed by discord.py from the
bot's roles and the channel's overwrites), so a raid never starts without its post.
"""

from __future__ import annotations

from dataclasses import dataclass

import discord

from core.i18n import N_, _, ngettext

SCOPES = ("bot", "applications.commands")


@dataclass(frozen=True)
class Need:
    flag: str  # the discord.Permissions attribute
    label: str  # the name Discord's settings show
    why: str
    lock_only: bool = False  # needed only for a raid that locks the chat
    thread_only: bool = False  # needed only for a raid that runs in a thread of its own
    channel_only: bool = False  # needed only for a raid that runs in the channel itself (not in a thread)
    # Asked for in the invite but never a reason to refuse a raid: without it the raid runs without
    # what the permission is for (its post unpinned), and the moderator is told.
    optional: bool = False


NEEDED: tuple[Need, ...] = (
    Need("view_channel", "View Channel", N_("see the raid channel at all")),
    Need("send_messages", "Send Messages", N_("post the raid, its report and scheduled leaderboards")),
    Need("embed_links", "Embed Links", N_("raid posts, reports and leaderboards are embeds")),
    Need("read_message_history", "Read Message History", N_("the report is posted as a reply to its raid post")),
    Need(
        "manage_roles", "Manage Roles",
        N_("the chat lock edits the channel's permission overwrites (shown as Manage Permissions in a channel)"),
        lock_only=True, channel_only=True,
    ),
    Need("pin_messages", "Pin Messages", N_("pin the raid post while the raid runs"), optional=True),
    Need("create_public_threads", "Create Public Threads", N_("start the thread a raid runs in"), thread_only=True),
    Need("send_messages_in_threads", "Send Messages in Threads", N_("post the raid and its report in its thread"),
         thread_only=True),
    # Discord: only Manage Threads may lock a thread, and in a locked thread only members holding it
    # may send or edit messages, so nubi keeps its voice there for the post's edits and the report.
    Need("manage_threads", "Manage Threads",
         N_("the chat lock of a raid in its own thread locks the thread, and nubi keeps posting in it"),
         lock_only=True, thread_only=True),
)

# What the bot's own member overwrite allows while a channel is locked: everything it needs to keep
# posting and editing there, whatever the lock denies to @everyone.
SPEAKING = discord.Permissions(**{n.flag: True for n in NEEDED if not (n.lock_only or n.thread_only or n.optional)})


def invite_permissions() -> discord.Permissions:
    """Every permission nubi asks for when invited."""
    return discord.Permissions(**{n.flag: True for n in NEEDED})


def invite_url(application_id: int) -> str:
    """The OAuth2 URL that adds the bot with its commands and exactly `invite_permissions()`."""
    return discord.utils.oauth_url(application_id, permissions=invite_permissions(), scopes=SCOPES)


def missing(held: discord.Permissions, *, lock: bool, thread: bool = False) -> list[Need]:
    """What a raid (locking or not, in a thread of its own or not) needs in a channel and the bot does
    not hold there."""
    return [n for n in NEEDED if not n.optional and (lock or not n.lock_only) and (thread or not n.thread_only)
            and not (thread and n.channel_only) and not getattr(held, n.flag)]


def refusal(lacking: list[Need]) -> str:
    """The moderator's answer when a raid cannot start here: which permissions, and what they are for."""
    names = ", ".join(n.label for n in lacking)
    reasons = "; ".join(f"{n.label}: {_(n.why)}" for n in lacking)
    return ngettext(
        "I can't start a raid here: I'm missing the {names} permission in this channel ({reasons}). "
        "Give my role these in the channel's or the server's settings and try again.",
        "I can't start a raid here: I'm missing the {names} permissions in this channel ({reasons}). "
        "Give my role these in the channel's or the server's settings and try again.",
        len(lacking),
    ).format(names=names, reasons=reasons)
