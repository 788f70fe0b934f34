"""The text command language, parsed once for every text channel (Telegram, Sessions API, console).

`parse(text)` returns a command object, None for plain text, or raises CommandError with a
one-line explanation and the command's usage. It never raises anything else, whatever the text.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field

from core.errors import ValidationError
from core.i18n import _
from core.raids.model import ACTION_LABELS, PLURALS
from core.windows import ANNOUNCED_WINDOWS

USAGE = {
    "join": "/join",
    "claim": "/claim <like|repost|reply|quote|bookmark|follow> [proof-url]",
    "leaderboard": "/leaderboard [raid|day|week|month|all]",
    "me": "/me",
    "link": "/link <x-handle>  or  /link verify  or  /link account [code]",
    "link account": "/link account  (get a code)  or  /link account <code>  (from your other account)",
    "help": "/help",
    "raid start": "/raid start <url> [likes=N reposts=N replies=N quotes=N bookmarks=N follows=N] "
    "[duration=30m] [max=N] [lock] [pin|nopin] [partners|nopartners] [replace]",
    "raid end": "/raid end",
    "raid cancel": "/raid cancel",
    "raid status": "/raid status",
    "unlock": "/unlock",
    "ban": "/ban <@member|id> [reason]  (or reply to their message with /ban)",
    "unban": "/unban <@member|id>",
    "points": "/points add|remove <@member|id> <n> <reason>  (or reply: /points add <n> <reason>)",
    "schedule leaderboard": "/schedule leaderboard <cron: 5 fields> <day|week|month|all|week-so-far|...> "
    "[top=N] [tz=Zone]",
    "schedule list": "/schedule list",
    "schedule remove": "/schedule remove <id>",
    "review": "/review  or  /review accept|reject|revoke <claim-id> [reason]  or  /review links",
    "settings": "/settings  or  /settings set <key> <value>  or  /settings reset <key>",
    "member merge": "/member merge <@member|#id|id> <@member|#id|id>",
    "community": "/community link  or  /community join <code>  or  /community chats  or  /community unlink <id>",
}
MODERATOR_COMMANDS = ("raid", "unlock", "ban", "unban", "points", "schedule", "review", "settings", "member",
                      "community")
MEMBER_COMMANDS = ("join", "claim", "leaderboard", "me", "link", "help")
ALIASES = {"lb": "leaderboard", "top": "leaderboard", "board": "leaderboard", "stats": "me", "start": "help"}


class CommandError(ValidationError):
    def __init__(self, message: str, usage_key: str | None = None) -> None:
        usage = USAGE.get(usage_key or "", "")
        super().__init__(message + "\n" + _("Usage: {usage}").format(usage=usage) if usage else message,
                         field=usage_key)
        self.usage = usage


@dataclass(frozen=True)
class Join:
    pass


@dataclass(frozen=True)
class Claim:
    action: str
    proof_url: str | None = None


@dataclass(frozen=True)
class Leaderboard:
    scope: str = "raid"  # raid, day, week, month, all
    top: int = 10


@dataclass(frozen=True)
class Me:
    pass


@dataclass(frozen=True)
class Link:
    handle: str | None = None  # None with verify=True: prove the link
    verify: bool = False


@dataclass(frozen=True)
class LinkAccount:
    """`/link account`: a one-time code for linking another account; with `code`: redeem one."""

    code: str | None = None


@dataclass(frozen=True)
class Help:
    pass


@dataclass(frozen=True)
class RaidStart:
    url: str
    objectives: dict[str, int] = field(default_factory=dict)
    points: dict[str, int] = field(default_factory=dict)
    duration_seconds: int | None = None
    max_participants: int | None = None
    lock: bool = False
    replace: bool = False
    verification: str | None = None
    pin: bool | None = None  # None: the community's `pin` setting
    thread: bool = False  # Discord's `thread` option: the raid runs in a new thread of the channel
    partners: bool | None = None  # also in the linked chats; None: the community's `partners` setting


@dataclass(frozen=True)
class RaidEnd:
    cancel: bool = False


@dataclass(frozen=True)
class RaidStatus:
    pass


@dataclass(frozen=True)
class Unlock:
    pass


@dataclass(frozen=True)
class BanCmd:
    member: str
    reason: str | None = None


@dataclass(frozen=True)
class UnbanCmd:
    member: str


@dataclass(frozen=True)
class PointsCmd:
    member: str
    amount: int  # negative for remove
    reason: str


@dataclass(frozen=True)
class ScheduleAdd:
    cron: str
    window: str
    top: int = 10
    tz: str | None = None  # None: the community's time zone setting (UTC unless set)


@dataclass(frozen=True)
class ScheduleList:
    pass


@dataclass(frozen=True)
class ScheduleRemove:
    schedule_id: int


@dataclass(frozen=True)
class Review:
    decision: str | None = None  # accept, reject, revoke, links (refused handle links), or None to list
    claim_id: int | None = None
    reason: str | None = None  # why a revoke takes the points back (optional)


@dataclass(frozen=True)
class SettingsShow:
    pass


@dataclass(frozen=True)
class SettingsChange:
    key: str
    value: str | None  # None resets the key to the global default


@dataclass(frozen=True)
class MemberMerge:
    """A moderator approves a refused account link: the two members, named as /ban names one."""

    first: str
    second: str


@dataclass(frozen=True)
class CommunityLink:
    """`/community link`: a one-time code another chat's moderator redeems to link the two chats."""


@dataclass(frozen=True)
class CommunityJoin:
    code: str


@dataclass(frozen=True)
class CommunityChats:
    pass


@dataclass(frozen=True)
class CommunityUnlink:
    link_id: int


Command = (
    Join | Claim | Leaderboard | Me | Link | LinkAccount | Help | RaidStart | RaidEnd | RaidStatus | Unlock | BanCmd
    | UnbanCmd | PointsCmd | ScheduleAdd | ScheduleList | ScheduleRemove | Review | SettingsShow | SettingsChange
    | MemberMerge | CommunityLink | CommunityJoin | CommunityChats | CommunityUnlink
)
MODERATOR_TYPES = (RaidStart, RaidEnd, RaidStatus, Unlock, BanCmd, UnbanCmd, PointsCmd, ScheduleAdd, ScheduleList,
                   ScheduleRemove, Review, SettingsChange, MemberMerge, CommunityLink, CommunityJoin, CommunityChats,
                   CommunityUnlink)

_DURATION = re.compile(r"^(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")
_MAX_TEXT = 4096


def action_name(word: str) -> str | None:
    w = word.lower().strip()
    if w in ACTION_LABELS:
        return w
    if w in PLURALS:
        return PLURALS[w]
    return {"rt": "repost", "retweet": "repost", "retweets": "repost", "comment": "reply", "comments": "reply",
            "bookmarked": "bookmark"}.get(w)


def parse_duration(text: str) -> int:
    t = text.lower().strip()
    if t.isdigit():
        return int(t) * 60
    m = _DURATION.match(t)
    if not t or not m or not any(m.groups()):
        raise CommandError(_("'{text}' is not a duration; write it like 30m, 1h or 1h30m").format(text=text[:20]),
                           "raid start")
    h, mi, s = (int(g) if g else 0 for g in m.groups())
    return h * 3600 + mi * 60 + s


def _int(text: str, what: str, usage: str) -> int:
    t = text.strip()
    if not re.fullmatch(r"[+-]?\d{1,9}", t):
        raise CommandError(_("{what} must be a whole number, not '{text}'").format(what=what, text=text[:20]), usage)
    return int(t)


def _split(text: str) -> list[str]:
    try:
        return shlex.split(text)
    except ValueError:  # an unbalanced quote: fall back to plain words rather than fail
        return text.split()


def parse(text: str) -> Command | None:
    if not isinstance(text, str):
        return None
    text = text.strip()
    if not text.startswith("/") or len(text) < 2:
        return None
    if len(text) > _MAX_TEXT:
        raise CommandError(_("That command is too long."))
    words = _split(text[1:])
    if not words:
        return None
    name = words[0].split("@", 1)[0].lower()
    name = ALIASES.get(name, name)
    args = words[1:]
    handler = _PARSERS.get(name)
    if handler is None:
        raise CommandError(_("I don't know /{name}. Try /help.").format(name=name[:32]))
    return handler(args)


def _join(args: list[str]) -> Command:
    return Join()


def _claim(args: list[str]) -> Command:
    if not args:
        raise CommandError(_("Which action are you claiming?"), "claim")
    action = action_name(args[0])
    if action is None:
        raise CommandError(_("'{word}' is not an action").format(word=args[0][:32]), "claim")
    proof = args[1] if len(args) > 1 else None
    if proof is not None and not proof.lower().startswith("https://"):
        raise CommandError(_("the proof must be an https:// link to your post"), "claim")
    return Claim(action, proof)


def _leaderboard(args: list[str]) -> Command:
    scope = "raid"
    top = 10
    for a in args:
        low = a.lower()
        if low in ("raid", "day", "week", "month", "all"):
            scope = low
        elif low in ("today", "daily"):
            scope = "day"
        elif low in ("weekly",):
            scope = "week"
        elif low in ("monthly",):
            scope = "month"
        elif low in ("alltime", "all-time", "total"):
            scope = "all"
        elif low.startswith("top="):
            top = _int(low[4:], "top", "leaderboard")
            if not 1 <= top <= 50:
                raise CommandError(_("top must be between 1 and 50"), "leaderboard")
        else:
            raise CommandError(_("'{word}' is not a leaderboard window").format(word=a[:32]), "leaderboard")
    return Leaderboard(scope, top)


def _me(args: list[str]) -> Command:
    return Me()


def _link(args: list[str]) -> Command:
    if not args:
        raise CommandError(_("Tell me your X handle."), "link")
    if args[0].lower() == "verify":
        return Link(None, True)
    if args[0].lower() == "account":  # an X handle named "account" is linked as /link @account
        if len(args) > 3:
            raise CommandError(_("A link code is one word, like K7QF-M2XA."), "link account")
        return LinkAccount("".join(args[1:])[:32] or None)
    return Link(args[0][:64], False)


def _help(args: list[str]) -> Command:
    return Help()


def _raid(args: list[str]) -> Command:
    if not args:
        raise CommandError(_("What should the raid do?"), "raid start")
    sub = args[0].lower()
    if sub == "end":
        return RaidEnd(False)
    if sub in ("cancel", "stop"):
        return RaidEnd(True)
    if sub in ("status", "info"):
        return RaidStatus()
    if sub != "start":
        raise CommandError(_("/raid {word} is not a raid command; use start, end, cancel or status").format(
            word=sub[:20]), "raid start")
    rest = args[1:]
    if not rest:
        raise CommandError(_("Which post is the raid for?"), "raid start")
    url = rest[0]
    objectives: dict[str, int] = {}
    points: dict[str, int] = {}
    duration = max_p = None
    lock = replace = False
    pin: bool | None = None
    partners: bool | None = None
    verification = None
    for opt in rest[1:]:
        low = opt.lower()
        if low == "lock":
            lock = True
        elif low in ("partners", "nopartners"):
            partners = low == "partners"
        elif low in ("pin", "nopin"):
            pin = low == "pin"
        elif low == "replace":
            replace = True
        elif "=" in low:
            key, _eq, value = low.partition("=")
            if key in ("duration", "time", "for"):
                duration = parse_duration(value)
            elif key in ("max", "max_participants", "limit"):
                max_p = _int(value, "max", "raid start")
            elif key in ("verify", "verification"):
                if value not in ("honor", "proof_link", "x_api", "review"):
                    raise CommandError(_("verify must be honor, proof_link, x_api or review"), "raid start")
                verification = value
            else:
                action = action_name(key)
                if action is None:
                    raise CommandError(_("'{word}' is not an action or option").format(word=key[:20]), "raid start")
                target, _x, pts = value.partition("x")
                objectives[action] = _int(target, _("{option} target").format(option=key), "raid start")
                if pts:
                    points[action] = _int(pts, _("{option} points").format(option=key), "raid start")
        else:
            raise CommandError(_("I don't understand '{word}'").format(word=opt[:32]), "raid start")
    return RaidStart(url, objectives, points, duration, max_p, lock, replace, verification, pin, partners=partners)


def _unlock(args: list[str]) -> Command:
    return Unlock()


# An empty member ("") means the author of the message the command replies to: core refuses it
# when the command is no reply.
def _ban(args: list[str]) -> Command:
    if not args:
        return BanCmd("")
    return BanCmd(args[0], " ".join(args[1:])[:500] or None)


def _unban(args: list[str]) -> Command:
    return UnbanCmd(args[0] if args else "")


def _points(args: list[str]) -> Command:
    if len(args) >= 3 and args[0].lower() in ("add", "remove") and _is_int(args[1]) and not _is_int(args[2]):
        args = [args[0], "", *args[1:]]  # `/points add 10 reason` in reply to the member's message
    if len(args) < 4 or args[0].lower() not in ("add", "remove"):
        raise CommandError(_("A points change needs add or remove, a member, a number and a reason."), "points")
    n = _int(args[2], _("the number of points"), "points")
    if n <= 0:
        raise CommandError(_("the number of points must be positive"), "points")
    sign = 1 if args[0].lower() == "add" else -1
    return PointsCmd(args[1], sign * n, " ".join(args[3:])[:500])


def _is_int(word: str) -> bool:
    return word.isascii() and word.isdigit()


def _schedule(args: list[str]) -> Command:
    if not args:
        raise CommandError(_("What should I schedule?"), "schedule leaderboard")
    sub = args[0].lower()
    if sub == "list":
        return ScheduleList()
    if sub in ("remove", "delete"):
        if len(args) < 2:
            raise CommandError(_("Which schedule?"), "schedule remove")
        return ScheduleRemove(_int(args[1].lstrip("#"), _("the schedule id"), "schedule remove"))
    if sub not in ("leaderboard", "lb"):
        raise CommandError(_("/schedule {word} is not known").format(word=sub[:20]), "schedule leaderboard")
    rest = args[1:]
    # The cron expression is either one quoted word or the first five words.
    if rest and len(rest[0].split()) == 5:
        cron, rest = rest[0], rest[1:]
    elif len(rest) >= 5:
        cron, rest = " ".join(rest[:5]), rest[5:]
    else:
        raise CommandError(_("The cron expression needs 5 fields."), "schedule leaderboard")
    if not rest or rest[0].lower() not in ANNOUNCED_WINDOWS:
        raise CommandError(_("Which window: day, week, month or all (the last one completed), "
                             "or day-so-far, week-so-far, month-so-far?"), "schedule leaderboard")
    window = rest[0].lower()
    top, tz = 10, None
    for opt in rest[1:]:
        low = opt.lower()
        if low.startswith("top="):
            top = _int(low[4:], "top", "schedule leaderboard")
        elif low.startswith("tz="):
            tz = opt[3:]
        else:
            raise CommandError(_("I don't understand '{word}'").format(word=opt[:32]), "schedule leaderboard")
    return ScheduleAdd(cron, window, top, tz)


def _review(args: list[str]) -> Command:
    if not args:
        return Review()
    decision = args[0].lower()
    if decision == "links":
        return Review("links")
    if decision == "revoke":
        if len(args) < 2:
            raise CommandError(_("Revoke which claim?"), "review")
        reason = " ".join(args[2:])[:500] or None
        return Review(decision, _int(args[1].lstrip("#"), _("the claim id"), "review"), reason)
    if decision not in ("accept", "reject") or len(args) < 2:
        raise CommandError(_("Accept, reject or revoke which claim?"), "review")
    return Review(decision, _int(args[1].lstrip("#"), _("the claim id"), "review"))


def _settings(args: list[str]) -> Command:
    if not args or args[0].lower() in ("show", "list"):
        return SettingsShow()
    sub = args[0].lower()
    if sub == "set" and len(args) >= 3:
        return SettingsChange(args[1].lower(), " ".join(args[2:])[:500])
    if sub == "reset" and len(args) == 2:
        return SettingsChange(args[1].lower(), None)
    raise CommandError(_("Set which setting to what, or reset which one?"), "settings")


def _member(args: list[str]) -> Command:
    if not args or args[0].lower() != "merge":
        raise CommandError(_("What should I do with members?"), "member merge")
    if len(args) != 3:
        raise CommandError(_("Name the two members to merge."), "member merge")
    return MemberMerge(args[1], args[2])


def _community(args: list[str]) -> Command:
    sub = args[0].lower() if args else ""
    if sub == "link" and len(args) == 1:
        return CommunityLink()
    if sub == "join" and len(args) >= 2:
        return CommunityJoin("".join(args[1:])[:32])
    if sub in ("chats", "list") and len(args) == 1:
        return CommunityChats()
    if sub == "unlink" and len(args) == 2:
        return CommunityUnlink(_int(args[1].lstrip("#"), "id", "community"))
    raise CommandError(_("Link this chat with another one, or list or remove its links?"), "community")


_PARSERS = {
    "join": _join,
    "claim": _claim,
    "leaderboard": _leaderboard,
    "me": _me,
    "link": _link,
    "help": _help,
    "raid": _raid,
    "unlock": _unlock,
    "ban": _ban,
    "unban": _unban,
    "points": _points,
    "schedule": _schedule,
    "review": _review,
    "settings": _settings,
    "member": _member,
    "community": _community,
}
