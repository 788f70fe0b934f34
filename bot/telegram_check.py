"""`nubi telegram check`: can this token's bot work in that group, before a raid finds out it cannot.

It asks Telegram what nubi depends on, through the documented Bot API methods only:
- getMe: the token is valid, and privacy mode (`can_read_all_group_messages`). With privacy mode on,
  a plain member bot receives `/raid@this_bot` always, but a bare `/raid` only when it was the last bot
  to post in the group; an administrator bot, or privacy mode off, receives every command.
- getChat / getChatMember (the bot itself): it is in the group, may send there, and has the rights the
  features need: `lock` mutes the chat with setChatPermissions, which needs "Ban users"
  (can_restrict_members). nubi pins nothing and deletes nothing, so it asks for no other right.
"""

from __future__ import annotations

from dataclasses import dataclass

from telegram import Bot, ChatMember, ChatMemberAdministrator, ChatMemberOwner, ChatMemberRestricted
from telegram.constants import ChatType
from telegram.error import BadRequest, Forbidden, InvalidToken, NetworkError, TelegramError

from core.config import TelegramConfig

from .preflight import StartupError

OK, WARN, FAIL = "ok", "warning", "problem"


@dataclass(frozen=True)
class Finding:
    level: str
    text: str

    def line(self) -> str:
        return f"[{self.level}] {self.text}"


def parse_chat(raw: str) -> int | str:
    """A chat id (-1001234567890) or a public @username."""
    text = raw.strip()
    if text.lstrip("-").isdigit():
        return int(text)
    if text.startswith("@") and len(text) > 1:
        return text
    raise StartupError(f"--chat {raw!r}: give the group's numeric id (e.g. -1001234567890) or its @username")


async def check(config: TelegramConfig, chat: int | str | None) -> list[Finding]:
    if config.token is None:
        raise StartupError("telegram.token is not set (NUBI_TELEGRAM_TOKEN): get one from @BotFather")
    where = config.api_base_url
    bot = Bot(config.token.get_secret_value(), base_url=where)
    try:
        try:
            await bot.initialize()  # getMe
        except InvalidToken as exc:
            # PTB's message quotes the token: it stays out of the line
            raise StartupError(f"Telegram refused the token at {where} (getMe was rejected): "
                               "copy it again from @BotFather") from exc
        except NetworkError as exc:
            raise StartupError(f"Telegram: cannot reach the Bot API at {where}: {exc.message}") from exc
        me = bot.bot
        findings = [Finding(OK, f"token valid: bot @{me.username} (id {me.id})")]
        privacy_on = not me.can_read_all_group_messages
        findings.append(Finding(OK, "privacy mode is on: in groups the bot gets commands, not chatter"
                                if privacy_on else "privacy mode is off: the bot reads every group message"))
        if chat is not None:
            findings += await _check_chat(bot, chat, privacy_on, me.username)
        return findings
    finally:
        try:
            await bot.shutdown()
        except TelegramError:
            pass


async def _check_chat(bot: Bot, chat_id: int | str, privacy_on: bool, username: str) -> list[Finding]:
    try:
        chat = await bot.get_chat(chat_id)
        member = await bot.get_chat_member(chat.id, bot.id)
    except (BadRequest, Forbidden) as exc:
        return [Finding(FAIL, f"chat {chat_id}: {exc.message} (is the bot in it? add it to the group first)")]
    name = chat.title or chat.username or str(chat.id)
    if chat.type == ChatType.PRIVATE:
        return [Finding(WARN, f"chat {chat_id} is a private chat: raids run in groups and supergroups")]
    if chat.type == ChatType.CHANNEL:
        return [Finding(FAIL, f"chat {chat_id} is a channel: members cannot join raids there; use a group")]
    findings = [Finding(OK, f"chat {name!r} ({chat.type}, id {chat.id})")]
    if member.status in (ChatMember.LEFT, ChatMember.BANNED):
        findings.append(Finding(FAIL, f"the bot is not a member of {name!r} ({member.status}): add it to the group"))
        return findings
    admin = isinstance(member, ChatMemberAdministrator | ChatMemberOwner)
    findings.append(Finding(OK, f"the bot is {'an administrator' if admin else 'a member'} of {name!r}"))
    if admin or not privacy_on:
        findings.append(Finding(OK, "commands: the bot receives every command in this group"))
    else:
        findings.append(Finding(WARN, f"commands: privacy mode is on and the bot is not an administrator, so "
                                      f"/raid@{username} always reaches it but a bare /raid only when it was the last "
                                      "bot to post here; make it an administrator (or /setprivacy Disable at "
                                      "@BotFather, then remove and re-add it)"))
    can_send = _may_send(member, chat.permissions.can_send_messages if chat.permissions else True)
    findings.append(Finding(OK, "the bot may send messages here") if can_send else
                    Finding(FAIL, "the bot may not send messages here: raid posts and replies would fail"))
    can_restrict = isinstance(member, ChatMemberOwner) or (
        isinstance(member, ChatMemberAdministrator) and member.can_restrict_members)
    findings.append(Finding(OK, "lock: the bot may mute the chat during a raid (can_restrict_members)")
                    if can_restrict else
                    Finding(WARN, "lock: raids started with `lock` cannot mute this chat: make the bot an "
                                  "administrator with the right \"Ban users\" (can_restrict_members)"))
    return findings


def _may_send(member: ChatMember, members_may_send: bool | None) -> bool:
    if isinstance(member, ChatMemberAdministrator | ChatMemberOwner):
        return True  # chat-wide restrictions do not apply to administrators
    if isinstance(member, ChatMemberRestricted):
        return bool(member.can_send_messages)
    return members_may_send is not False
