"""Dispatch: a parsed command (from any channel) becomes core calls and a platform-neutral reply."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from sqlalchemy import bindparam, select

from core import access, partners
from core.badges import MEDAL
from core.codes import CODE_TTL
from core.community_settings import chat_language
from core.context import claim_words
from core.directory import ChatRef, MemberRef, ensure_community, ensure_member, seen_in_community
from core.errors import NoActiveRaid, NubiError, RaidNotFound
from core.i18n import DEFAULT_LANGUAGE, LANGUAGE_NAMES, N_, _, ngettext, use_language
from core.raids.model import RaidProgress, RaidSpec, action_word
from core.storage.models import Community, Raid
from core.targets import Mention, resolve_target
from core.views import View, info_view, leaderboard_view, parse_custom_id, raid_view, report_view

from . import parser as p

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession

    from core.services import Services

log = logging.getLogger(__name__)

PLATFORM_CHATS = ("telegram", "discord")


@dataclass(frozen=True)
class ChatContext:
    """Where a command came from and who sent it. Who is a moderator is the adapter's fact to pass in.

    `mentions` are the members the platform resolved in the command's text (Telegram `text_mention`
    and `mention` entities, Discord user options) and `reply_to` the author of the message the command
    answers: a moderator's command finds its target member through these before any name lookup."""

    chat: ChatRef
    member: MemberRef
    is_moderator: bool = False
    private: bool = False
    mentions: tuple[Mention, ...] = ()
    reply_to: MemberRef | None = None
    thread: str | None = None  # the Telegram forum topic the command was sent in
    # The community's language when the adapter already looked it up (it words its own texts in it too).
    language: str | None = None

    @property
    def platform_moderator(self) -> bool | None:
        """The moderator flag a community records: the platform's own word (Telegram admins, Discord
        permissions), or None where the caller is not on a platform (Sessions API, console), whose
        permission to run moderator commands says nothing about the member's place on the boards."""
        return self.is_moderator if self.chat.platform in PLATFORM_CHATS else None


@dataclass(frozen=True)
class Reply:
    view: View
    ephemeral: bool = False
    error: bool = False
    # The chat post that follows from an event (e.g. the raid post after RaidStarted) already answers:
    # adapters that draw such posts may leave a quiet reply out of the chat.
    quiet: bool = False
    # For the member's eyes only (a one-time code): ephemeral on Discord; on Telegram sent in the
    # member's private chat with the bot, and the shared chat reads `extra["sent_privately"]` or,
    # when the bot may not write to them, `extra["not_sent_privately"]` (Views) instead.
    private: bool = False
    raid: RaidProgress | None = None
    extra: dict[str, object] = field(default_factory=dict)
    # The language the reply is worded in, when core looked it up itself (a press): the adapter's own
    # words around it (a toast, a pointer to the post) go in it too.
    language: str | None = None

    @property
    def text(self) -> str:
        return self.view.text


def error_reply(exc: Exception) -> Reply:
    if isinstance(exc, NubiError):
        return Reply(info_view(exc.message), ephemeral=True, error=True)
    log.error("unexpected error in a command", exc_info=exc)
    return Reply(info_view(_("Something went wrong, try again.")), ephemeral=True, error=True)


def _say(text: str, *, ephemeral: bool = False) -> Reply:
    return Reply(info_view(text), ephemeral=ephemeral)


def help_text(is_moderator: bool) -> str:
    lines = [
        _("nubi raids: join the push on a post, do the actions, claim them, climb the board."),
        "",
        _("Member commands:"),
        _("/join: join the active raid"),
        _("/claim <action> [proof-url]: claim an action you did (like, repost, reply, quote, bookmark, follow)"),
        _("/leaderboard [raid|day|week|month|all]: the board"),
        _("/me: your points, rank and streak"),
        _("/link <x-handle>: link your X account"),
        _("/link account: link your Telegram and Discord accounts (one score, one place on the board)"),
    ]
    if is_moderator:
        lines += [
            "",
            _("Moderator commands:"),
            p.USAGE["raid start"],
            "/raid end | /raid cancel | /raid status",
            _("/unlock: lift the chat lock now"),
            p.USAGE["ban"] + " | " + p.USAGE["unban"],
            p.USAGE["points"],
            p.USAGE["schedule leaderboard"],
            "/schedule list | /schedule remove <id>",
            p.USAGE["review"],
            p.USAGE["settings"],
            p.USAGE["community"],
            _("{usage}: approve linking two accounts that both hold points here").format(usage=p.USAGE["member merge"]),
            "",
            _("Points are recognition inside this community. X's developer policy forbids paying or rewarding "
              "people (with money or anything virtual) for actions on X; what a community does with its points "
              "is its own decision, and X-API verification is optional."),
        ]
    return "\n".join(lines)


class CommandService:
    def __init__(self, services: Services) -> None:
        self.s = services

    async def language(self, chat: ChatRef) -> str:
        """The language replies in this chat are worded in: its community's `language` setting; the
        default when it cannot be read (the database is down: the command's own "try again" reply,
        in the default language, beats no reply at all)."""
        try:
            return await self.s.community_settings.language_of_chat(chat)
        except Exception as exc:
            log.warning("could not read the language of %s:%s: %s", chat.platform, chat.external_id, exc)
            return DEFAULT_LANGUAGE

    async def _in_language(self, ctx: ChatContext) -> ChatContext:
        return ctx if ctx.language is not None else replace(ctx, language=await self.language(ctx.chat))

    async def handle_text(self, ctx: ChatContext, text: str) -> Reply | None:
        """A chat message: None when it is not a command, else the reply (errors included), in the
        community's language."""
        try:
            cmd = p.parse(text)
        except NubiError:
            ctx = await self._in_language(ctx)
            with use_language(ctx.language):
                try:  # parsed again to word the refusal in the community's language
                    p.parse(text)
                except NubiError as exc:
                    return error_reply(exc)
            return None
        if cmd is None:
            return None
        ctx = await self._in_language(ctx)
        if not ctx.private and ctx.chat.platform in ("telegram", "discord", "console"):
            try:  # every chat conversation lives in a session; its log must never block the command
                community_id = await self._community(ctx)
                await self.s.sessions.record_chat_message(
                    community_id, member=f"{ctx.member.platform}:{ctx.member.external_id}", command=type(cmd).__name__
                )
            except Exception:
                log.exception("could not log the chat message to its community session")
        return await self.execute(ctx, cmd)

    async def execute(self, ctx: ChatContext, cmd: p.Command) -> Reply:
        ctx = await self._in_language(ctx)
        with use_language(ctx.language):
            return await self._execute(ctx, cmd)

    async def _execute(self, ctx: ChatContext, cmd: p.Command) -> Reply:
        here = access.chat_community(ctx.chat)
        if isinstance(cmd, p.MODERATOR_TYPES) and not access.may_moderate(
                access.chat_caller(ctx.chat, moderator=ctx.is_moderator), here):
            return _say(_("Sorry, only moderators can do that here."), ephemeral=True)
        try:
            if not ctx.private and not isinstance(cmd, p.Join | p.Claim):  # joining records it itself
                await self._seen(ctx)
            return await self._run(ctx, cmd)
        except Exception as exc:  # mapped in one place: domain errors to words, the rest logged
            return error_reply(exc)

    # -- buttons -------------------------------------------------------------------------------

    async def press(self, ctx: ChatContext, custom_id: str) -> Reply:
        """A raid-post button. The reply text is short: it becomes a toast or an ephemeral message.

        A context without its language gets it from the same read as the raid's chat (one read per
        press, not two: presses are the hottest chat path), and the reply says which it was worded in."""
        parsed = parse_custom_id(custom_id)
        where: str | None = None
        if parsed is not None and ctx.language is None:
            try:
                language, where = await self._press_facts(parsed[1], ctx.chat)
                ctx = replace(ctx, language=language)
            except Exception:  # each read again on its own below, with its own error handling
                where = None
        ctx = await self._in_language(ctx)
        with use_language(ctx.language):
            return replace(await self._press(ctx, custom_id, where), language=ctx.language)

    async def _press(self, ctx: ChatContext, custom_id: str, where: str | None) -> Reply:
        parsed = parse_custom_id(custom_id)
        if parsed is None:
            return _say(_("That button is no longer valid."), ephemeral=True)
        action, raid_id, arg = parsed
        try:
            if where is None:
                where = await self._raid_in_chat(raid_id, ctx.chat)
            if where is None:
                log.warning("refused a %s press on raid %s from %s:%s%s (not that chat's raid), member %s",
                            action, raid_id, ctx.chat.platform, ctx.chat.external_id,
                            f" channel {ctx.chat.channel}" if ctx.chat.channel else "", ctx.member.external_id)
                return _say(_("That button belongs to a raid in another chat."), ephemeral=True)
            if action == "join":
                r = await self.s.raids.join(raid_id, ctx.member, is_moderator=_moderator_flag(ctx, where == "partner"))
                if r.already:
                    return _say(_("You're already in raid #{id} (raider #{position}).").format(
                        id=raid_id, position=r.position), ephemeral=True)
                if r.bonus:
                    return _say(_("Joined raid #{id} as raider #{position}! +{bonus} early bird").format(
                        id=raid_id, position=r.position, bonus=r.bonus), ephemeral=True)
                return _say(_("Joined raid #{id} as raider #{position}!").format(id=raid_id, position=r.position),
                            ephemeral=True)
            if action == "claim" and arg:
                return await self._claim(ctx, raid_id, p.Claim(arg))
            if action == "stats":
                return await self._my_raid_stats(ctx, raid_id)
        except NubiError as exc:
            return _short_error(exc)
        except Exception as exc:
            return error_reply(exc)
        return _say(_("That button is no longer valid."), ephemeral=True)

    # -- commands ------------------------------------------------------------------------------

    async def _run(self, ctx: ChatContext, cmd: p.Command) -> Reply:
        s = self.s
        if isinstance(cmd, p.Help):
            return _say(help_text(ctx.is_moderator), ephemeral=True)
        if isinstance(cmd, p.Link):
            return await self._link(ctx, cmd)
        if isinstance(cmd, p.LinkAccount):
            return await self._link_account(ctx, cmd)
        if isinstance(cmd, p.Me):
            return await self._me(ctx)
        if isinstance(cmd, p.Leaderboard):
            return await self._leaderboard(ctx, cmd)
        if ctx.private:
            return _say(_("Use this in the group where the raid runs."), ephemeral=True)
        if isinstance(cmd, p.Join):
            try:  # the chat's own raid; else a linked chat's raid this chat takes part in (core/partners.py)
                raid_id, partner = await s.raids.active_raid_id(ctx.chat, partners=False), False
            except NoActiveRaid:
                raid_id, partner = await s.raids.active_raid_id(ctx.chat), True
            r = await s.raids.join(raid_id, ctx.member, is_moderator=_moderator_flag(ctx, partner))
            if r.already:
                return _say(_("You're already in raid #{id} (raider #{position}).").format(
                    id=raid_id, position=r.position), ephemeral=True)
            if r.bonus:
                return _say(ngettext(
                    "{name} joined raid #{id} as raider #{position} (+{bonus} early-bird point).",
                    "{name} joined raid #{id} as raider #{position} (+{bonus} early-bird points).", r.bonus,
                ).format(name=ctx.member.display_name, id=raid_id, position=r.position, bonus=r.bonus))
            return _say(_("{name} joined raid #{id} as raider #{position}.").format(
                name=ctx.member.display_name, id=raid_id, position=r.position))
        if isinstance(cmd, p.Claim):
            raid_id = await s.raids.active_raid_id(ctx.chat)
            return await self._claim(ctx, raid_id, cmd)
        if isinstance(cmd, p.RaidStart):
            spec = RaidSpec(cmd.url, cmd.objectives, cmd.points, cmd.duration_seconds, cmd.max_participants,
                            cmd.lock, cmd.replace, cmd.verification, pin=cmd.pin, thread=ctx.thread,
                            in_thread=cmd.thread, partners=cmd.partners)
            progress = await s.raids.start(ctx.chat, spec, by=ctx.member)
            reply = Reply(raid_view(progress), quiet=True, raid=progress)
            notes = await s.partners.start_notes(progress.id, lock=progress.lock, pin=progress.pin)
            if notes:  # the partner chats' missing rights: the adapter adds them to its answer
                reply.extra["partner_notes"] = info_view("\n".join(notes))
            return reply
        if isinstance(cmd, p.RaidEnd):  # a partner chat's moderators do not end the raid of a linked chat
            raid_id = await s.raids.active_raid_id(ctx.chat, partners=False)
            if cmd.cancel:
                await s.raids.end(raid_id, status="cancelled", reason="cancelled by a moderator",
                                  cause="cancelled_by_moderator")
            else:
                await s.raids.end(raid_id, reason="ended by a moderator", cause="ended_by_moderator")
            report = await s.raids.report(raid_id)
            return Reply(report_view(report) if report else info_view(_("Raid #{id} ended.").format(id=raid_id)),
                         quiet=True)
        if isinstance(cmd, p.RaidStatus):
            raid_id = await s.raids.active_raid_id(ctx.chat)
            progress = await s.raids.progress(raid_id)
            return Reply(raid_view(progress), raid=progress)
        if isinstance(cmd, p.CommunityLink | p.CommunityJoin | p.CommunityChats | p.CommunityUnlink):
            return await self._partners(ctx, cmd)
        community_id = await self._community(ctx)
        if isinstance(cmd, p.Unlock):
            released = await s.locks.unlock_here(community_id, "unlocked by a moderator", channel=ctx.chat.channel_key)
            return _say(_("Chat unlocked.") if released else _("The chat is not locked."))
        if isinstance(cmd, p.BanCmd | p.UnbanCmd | p.PointsCmd):
            return await self._moderate(ctx, community_id, cmd)
        if isinstance(cmd, p.ScheduleAdd):
            actor = await self._member_id(ctx)
            tz = cmd.tz or await s.community_settings.timezone(community_id)
            sched = await s.schedules.add(community_id, cmd.cron, cmd.window, top_n=cmd.top, tz=tz, created_by=actor,
                                          channel=ctx.chat.channel_key)
            return _say(_("Schedule #{id}: the {window} top {top} at '{cron}' ({zone}).").format(
                id=sched.id, window=cmd.window, top=cmd.top, cron=sched.cron, zone=sched.timezone))
        if isinstance(cmd, p.ScheduleList):
            items = await s.schedules.list(community_id)
            if not items:
                return _say(_("No scheduled announcements here."), ephemeral=True)
            return _say("\n".join(
                (_("#{id}: {window} top {top} at '{cron}' ({zone}) in <#{channel}>") if x.channel
                 else _("#{id}: {window} top {top} at '{cron}' ({zone})")).format(
                    id=x.id, window=x.window, top=x.top_n, cron=x.cron, zone=x.timezone, channel=x.channel)
                for x in items), ephemeral=True)
        if isinstance(cmd, p.ScheduleRemove):
            ok = await s.schedules.remove(community_id, cmd.schedule_id)
            return _say((_("Schedule #{id} removed.") if ok else _("There is no schedule #{id} here.")).format(
                id=cmd.schedule_id), ephemeral=True)
        if isinstance(cmd, p.Review):
            return await self._review(ctx, community_id, cmd)
        if isinstance(cmd, p.SettingsShow | p.SettingsChange):
            return await self._settings(ctx, community_id, cmd)
        if isinstance(cmd, p.MemberMerge):
            return await self._member_merge(ctx, community_id, cmd)
        return _say(_("I don't know that command. Try /help."), ephemeral=True)

    async def _claim(self, ctx: ChatContext, raid_id: int, cmd: p.Claim) -> Reply:
        r = await self.s.raids.claim(raid_id, ctx.member, cmd.action, proof_url=cmd.proof_url)
        name = action_word(cmd.action)
        if r.already:
            return _say(_("You already claimed {action} ({state}).").format(action=name, state=_state(r.verification)),
                        ephemeral=True)
        if r.verification == "pending":
            return _say(_("{action} claim recorded: waiting for verification.").format(action=name.capitalize()),
                        ephemeral=True)
        if r.completion_bonus:
            return _say(_("{action} claimed: +{points} (+{bonus} for completing every objective)").format(
                action=name.capitalize(), points=r.points, bonus=r.completion_bonus), ephemeral=True)
        return _say(_("{action} claimed: +{points}").format(action=name.capitalize(), points=r.points), ephemeral=True)

    async def _my_raid_stats(self, ctx: ChatContext, raid_id: int) -> Reply:
        from core.storage.models import MemberIdentity, RaidAction, RaidParticipant

        async def op(sess):  # type: ignore[no-untyped-def]
            mid = await sess.scalar(select(MemberIdentity.member_id).where(
                MemberIdentity.platform == ctx.member.platform, MemberIdentity.external_id == ctx.member.external_id))
            if mid is None:
                return None
            part = (await sess.execute(select(RaidParticipant.points, RaidParticipant.join_position, RaidParticipant.id)
                                       .where(RaidParticipant.raid_id == raid_id, RaidParticipant.member_id == mid))).first()
            if part is None:
                return None
            claims = (await sess.execute(select(RaidAction.action_type, RaidAction.verification)
                                         .where(RaidAction.participant_id == part.id))).all()
            return part, claims

        found = await self.s.db.read(op)
        if found is None:
            return _say(_("You haven't joined raid #{id} yet.").format(id=raid_id), ephemeral=True)
        part, claims = found
        listed = ", ".join(f"{action_word(a)} ({_state(v)})" for a, v in claims) or _("no claims yet")
        return _say(ngettext("Raid #{id}: raider #{position}, {points} pt; {claims}.",
                             "Raid #{id}: raider #{position}, {points} pts; {claims}.", part.points).format(
            id=raid_id, position=part.join_position, points=part.points, claims=listed), ephemeral=True)

    async def _leaderboard(self, ctx: ChatContext, cmd: p.Leaderboard) -> Reply:
        s = self.s
        if ctx.private:
            return await self._me(ctx)
        if cmd.scope == "raid":
            raid_id = await self._current_or_last_raid(ctx.chat)
            entries = await s.raids.leaderboard(raid_id, top=cmd.top)
            return Reply(leaderboard_view("raid", entries, raid_id=raid_id))
        community_id = await self._community(ctx)
        entries = await s.boards.board(community_id, cmd.scope, top=cmd.top)
        return Reply(leaderboard_view(cmd.scope, entries))

    async def _me(self, ctx: ChatContext) -> Reply:
        s = self.s
        member_id = await self._member_id(ctx)
        context = await s.context.for_member(member_id)
        m = context["member"]
        lines = [f"{m['name']}"]
        if len(m.get("platforms", ())) > 1:
            lines.append(_("Accounts: {platforms}").format(platforms=", ".join(m["platforms"])))
        if m["xHandle"]:
            lines.append((_("X: @{handle}") if m["xHandleVerified"] else _("X: @{handle} (not proven)")).format(
                handle=m["xHandle"]))
        else:
            lines.append(_("X: not linked (use /link <handle>)"))
        standings = context["standings"]
        if not ctx.private:
            cid = await self._community(ctx)
            standings = [st for st in standings if st["communityId"] == cid]
        for st in standings:
            rank = f"#{st['rank']}" if st["rank"] else _("unranked")
            week = f"#{st['weekRank']}" if st["weekRank"] else _("unranked")
            where = "" if not ctx.private else _("community {id}: ").format(id=st["communityId"])
            lines.append(where + ngettext("{points} pt all time ({rank}), {week_points} this week ({week_rank})",
                                          "{points} pts all time ({rank}), {week_points} this week ({week_rank})",
                                          st["points"]).format(
                points=st["points"], rank=rank, week_points=st["weekPoints"], week_rank=week))
            if st.get("claims"):
                lines.append(where + _("claims: {list}").format(list=claim_words(st["claims"])))
            earned = await s.badges.of_member(st["communityId"], member_id)
            if earned:
                lines.append(_("{where}Badges: {badges}").format(
                    where=where, badges=", ".join(f"{MEDAL} {b}" for b in earned)))
        if not standings:
            lines.append(_("No points yet."))
        lines.append(ngettext("Streak: {days} day; raids joined recently: {raids}",
                              "Streak: {days} days; raids joined recently: {raids}", context["streakDays"]).format(
            days=context["streakDays"], raids=len(context["recentRaids"])))
        return _say("\n".join(lines), ephemeral=True)

    async def _link(self, ctx: ChatContext, cmd: p.Link) -> Reply:
        if cmd.verify:
            verifier = getattr(self.s, "link_verifier", None)
            if verifier is None:
                return _say(_("Link proving needs the X API, which this bot has not been given. "
                              "Your link stays unproven."), ephemeral=True)
            return _say(await verifier(ctx.member), ephemeral=True)
        _linked, handle = await self.s.links.link(ctx.member, cmd.handle or "")
        proof = getattr(self.s, "link_challenge", None)
        if proof is not None:
            return _say(await proof(ctx.member, handle), ephemeral=True)
        return _say(_("Linked @{handle} (unproven: this bot has no X API access to prove it).").format(handle=handle),
                    ephemeral=True)

    async def _link_account(self, ctx: ChatContext, cmd: p.LinkAccount) -> Reply:
        links = self.s.member_links
        if cmd.code is None:
            issued = await links.issue(ctx.member)
            text = _("Your link code: {code}\nWithin {minutes} minutes, send /link account {code} from your other "
                     "account (on Telegram or Discord). Keep it to yourself: the account that redeems it becomes "
                     "one member with this one.").format(code=issued.code, minutes=CODE_TTL.seconds // 60)
            return Reply(info_view(text), ephemeral=True, private=True, extra={
                "sent_privately": info_view(_("I sent you a link code in our private chat.")),
                "not_sent_privately": info_view(_("I can't write to you privately yet: open a private chat with me, "
                                                  "press Start and send /link account there.")),
            })
        outcome = await links.redeem(ctx.member, cmd.code)
        if not outcome.linked:
            where = ", ".join(c.title for c in outcome.refused_in)
            first, second = outcome.members
            return Reply(info_view(_(
                "Not linked: both accounts already hold points in {communities}, and linking would merge two "
                "places on the board. A moderator there can approve it with /member merge #{first} #{second}."
            ).format(communities=where, first=first, second=second)), ephemeral=True, error=True)
        return _say(_("Linked: your accounts ({platforms}) are one member now, with one score, one X handle and "
                      "one place on each board.").format(platforms=", ".join(outcome.platforms)), ephemeral=True)

    async def _partners(
        self, ctx: ChatContext, cmd: p.CommunityLink | p.CommunityJoin | p.CommunityChats | p.CommunityUnlink
    ) -> Reply:
        """Linking this chat with another one (core/partners.py): raids started with `partners` run in both."""
        service = self.s.partners
        if isinstance(cmd, p.CommunityLink):
            issued = await service.issue(ctx.chat)
            text = _("Chat link code: {code}\nWithin {minutes} minutes, a moderator of the other chat (on Telegram "
                     "or Discord) sends /community join {code} there. Raids started with partners then run in both "
                     "chats. Keep the code among moderators.").format(code=issued.code,
                                                                       minutes=partners.CODE_TTL.seconds // 60)
            return Reply(info_view(text), ephemeral=True, private=True, extra={
                "sent_privately": info_view(_("I sent you the chat link code in our private chat.")),
                "not_sent_privately": info_view(_("I can't write to you privately yet: open a private chat with me, "
                                                  "press Start and send /community link here again.")),
            })
        if isinstance(cmd, p.CommunityJoin):
            linked = await service.join(ctx.chat, cmd.code)
            return _say(_("Linked with {chat}. Raids started in either chat with partners run in both.").format(
                chat=linked.shown))
        if isinstance(cmd, p.CommunityChats):
            found = await service.chats(ctx.chat)
            if not found:
                return _say(_("This chat is not linked with another chat. Link one with /community link."),
                            ephemeral=True)
            return _say(_("Chats linked with this one:") + "\n" + "\n".join(f"#{c.link_id} {c.shown}" for c in found)
                        + "\n" + _("Remove a link with /community unlink <id>."), ephemeral=True)
        done = await service.unlink(ctx.chat, cmd.link_id)
        return _say((_("Link #{id} removed.") if done else _("This chat has no link #{id}.")).format(id=cmd.link_id))

    async def _member_merge(self, ctx: ChatContext, community_id: int, cmd: p.MemberMerge) -> Reply:
        s = self.s
        actor = await self._member_id(ctx)
        now = s.clock.now()

        async def targets(sess):  # type: ignore[no-untyped-def]
            return [await resolve_target(sess, community_id, ctx.chat.platform, named, now, mentions=ctx.mentions)
                    for named in (cmd.first, cmd.second)]

        first, second = await s.db.write(targets)
        outcome = await s.member_links.merge(community_id, first.member_id, second.member_id, actor=actor)
        return _say(_("{first} and {second} are one member now (#{member}, on {platforms}); every point of both "
                      "is kept.").format(first=first.shown, second=second.shown, member=outcome.member_id,
                                         platforms=", ".join(outcome.platforms)))

    async def _moderate(self, ctx: ChatContext, community_id: int, cmd: p.BanCmd | p.UnbanCmd | p.PointsCmd) -> Reply:
        s = self.s
        actor = await self._member_id(ctx)
        now = s.clock.now()
        target = await s.db.write(lambda sess: resolve_target(
            sess, community_id, ctx.chat.platform, cmd.member, now, mentions=ctx.mentions, reply_to=ctx.reply_to))
        who = target.shown
        if isinstance(cmd, p.BanCmd):
            done = await s.moderation.ban(community_id, target.member_id, cmd.reason, actor=actor)
            return _say((_("{name} is banned from raids here.") if done else _("{name} was already banned.")).format(
                name=who))
        if isinstance(cmd, p.UnbanCmd):
            done = await s.moderation.unban(community_id, target.member_id, actor=actor)
            return _say((_("{name} may raid again.") if done else _("{name} was not banned.")).format(name=who))
        await s.moderation.adjust_points(community_id, target.member_id, cmd.amount, cmd.reason, actor=actor)
        n = abs(cmd.amount)
        if cmd.amount > 0:
            text = ngettext("{n} point added to {name}: {reason}", "{n} points added to {name}: {reason}", n)
        else:
            text = ngettext("{n} point removed from {name}: {reason}", "{n} points removed from {name}: {reason}", n)
        return _say(text.format(n=n, name=who, reason=cmd.reason))

    async def _review(self, ctx: ChatContext, community_id: int, cmd: p.Review) -> Reply:
        s = self.s
        if cmd.decision == "links":
            return await self._refused_links(community_id)
        if cmd.decision is None:
            items = await s.raids.review_queue(community_id=community_id)
            if not items:
                return _say(_("No claims are waiting for review."), ephemeral=True)
            lines = [_("#{claim} raid #{raid}: {name} claims {action}").format(
                claim=i.claim_id, raid=i.raid_id, name=i.name, action=action_word(i.action))
                + (f" — {i.proof_url}" if i.proof_url else "") for i in items]
            return _say(_("Waiting for review:") + "\n" + "\n".join(lines) + "\n"
                        + _("Use /review accept|reject <id>."), ephemeral=True)
        actor = await self._member_id(ctx)
        if cmd.decision == "revoke":
            taken = await s.raids.revoke(cmd.claim_id or 0, reviewer_id=actor, reason=cmd.reason,
                                         community_id=community_id)
            if cmd.reason:
                text = ngettext("Claim #{id} revoked: -{n} point ({reason}).",
                                "Claim #{id} revoked: -{n} points ({reason}).", taken)
            else:
                text = ngettext("Claim #{id} revoked: -{n} point.", "Claim #{id} revoked: -{n} points.", taken)
            return _say(text.format(id=cmd.claim_id, n=taken, reason=cmd.reason), ephemeral=True)
        r = await s.raids.review(cmd.claim_id or 0, cmd.decision == "accept", reviewer_id=actor,
                                 community_id=community_id)
        if r.already:
            return _say(_("Claim #{id} was already settled ({state}).").format(
                id=cmd.claim_id, state=_state(r.verification)), ephemeral=True)
        if cmd.decision == "accept":
            return _say(_("Claim #{id} accepted: +{points}.").format(
                id=cmd.claim_id, points=r.points + r.completion_bonus), ephemeral=True)
        return _say(_("Claim #{id} rejected.").format(id=cmd.claim_id), ephemeral=True)

    async def _refused_links(self, community_id: int) -> Reply:
        """Handle links /link refused because another member holds the handle, in this community."""
        conflicts = await self.s.links.conflicts(community_id=community_id, limit=20)
        if not conflicts:
            return _say(_("No refused handle links here."), ephemeral=True)
        lines = [
            (_("@{handle}: asked for by {claimant} (member {claimant_id}), held by {owner} (member {owner_id}), "
               "{at} UTC") if c["ownerMemberId"] else
             _("@{handle}: asked for by {claimant} (member {claimant_id}), held by nobody now, {at} UTC")).format(
                handle=c["handle"], claimant=c["claimantName"], claimant_id=c["claimantMemberId"],
                owner=c["ownerName"], owner_id=c["ownerMemberId"], at=c["at"][:16].replace("T", " "))
            for c in conflicts
        ]
        return _say(_("Refused handle links:") + "\n" + "\n".join(lines), ephemeral=True)

    async def _settings(self, ctx: ChatContext, community_id: int, cmd: p.SettingsShow | p.SettingsChange) -> Reply:
        s = self.s
        if isinstance(cmd, p.SettingsChange):
            actor = await self._member_id(ctx)
            view = await s.community_settings.change(community_id, {cmd.key: cmd.value}, actor=actor)
            now = view["effective"].get(cmd.key)
            if cmd.key == "language":  # the answer is already in the new language
                with use_language(str(now)):
                    return _say(_("This community now reads nubi in {language}.").format(
                        language=LANGUAGE_NAMES.get(str(now), str(now))))
            if cmd.value is None:
                return _say(_("{key} is back to the default: {value}.").format(key=cmd.key, value=_setting(now)))
            return _say(_("{key} is now {value} here.").format(key=cmd.key, value=_setting(now)))
        view = await s.community_settings.show(community_id)
        own = view["settings"]
        lines = [f"{k} = {_setting(v)}" + (_(" (set here)") if k in own else "") for k, v in view["effective"].items()]
        return _say(_("Settings of this community:") + "\n" + "\n".join(lines)
                    + ("\n" + _("Moderators change them with /settings set <key> <value> or /settings reset <key>.")
                       if ctx.is_moderator else ""), ephemeral=True)

    # -- lookups -------------------------------------------------------------------------------

    async def _community(self, ctx: ChatContext) -> int:
        now = self.s.clock.now()
        return await self.s.db.write(lambda sess: ensure_community(sess, ctx.chat, now))

    async def _seen(self, ctx: ChatContext) -> None:
        """The sender used nubi in this community: from now on moderators can name them here."""
        now = self.s.clock.now()

        async def op(sess):  # type: ignore[no-untyped-def]
            community_id = await ensure_community(sess, ctx.chat, now)
            member_id = await ensure_member(sess, ctx.member, now)
            await seen_in_community(sess, community_id, member_id, ctx.platform_moderator, now)

        await self.s.db.write(op)

    async def _raid_in_chat(self, raid_id: int, chat: ChatRef) -> str | None:
        """A raid's buttons act only in the chats the raid runs in: "own" for its own chat (its community,
        and on Discord its channel; an unknown raid answers for itself), "partner" for a linked chat it
        is posted in too (core/partners.py), None for any other chat."""
        return await self.s.db.read(lambda sess: _where_raid_runs(sess, raid_id, chat))

    async def _press_facts(self, raid_id: int, chat: ChatRef) -> tuple[str, str | None]:
        """The chat's language and where the raid runs for it (`_raid_in_chat`), in one read."""
        async def op(sess):  # type: ignore[no-untyped-def]
            return await chat_language(sess, chat), await _where_raid_runs(sess, raid_id, chat)

        return await self.s.db.read(op)

    async def _member_id(self, ctx: ChatContext) -> int:
        now = self.s.clock.now()
        return await self.s.db.write(lambda sess: ensure_member(sess, ctx.member, now))

    async def _current_or_last_raid(self, chat: ChatRef) -> int:
        try:
            return await self.s.raids.active_raid_id(chat)
        except NoActiveRaid:
            pass

        async def op(sess):  # type: ignore[no-untyped-def]
            return await sess.scalar(
                select(Raid.id).join(Community, Community.id == Raid.community_id)
                .where(Community.platform == chat.platform, Community.external_id == chat.external_id,
                       Raid.channel_id == chat.channel_key)
                .order_by(Raid.id.desc()).limit(1))

        raid_id = await self.s.db.read(op)
        if raid_id is None:
            raise RaidNotFound(_("No raid has run here yet. Try /leaderboard week."))
        return raid_id


def _moderator_flag(ctx: ChatContext, partner: bool) -> bool | None:
    """What a join records about the member's moderator role in the raid's community: the platform's
    word in the raid's own chat; nothing from a partner chat (a moderator there is not one here)."""
    return None if partner else ctx.platform_moderator


def _setting(value: object) -> str:
    if isinstance(value, list):
        return ", ".join(str(v) for v in value) or _("none")
    return str(value).lower() if isinstance(value, bool) else str(value)


def _state(verification: str) -> str:
    return _(CLAIM_STATE_WORDS[verification]) if verification in CLAIM_STATE_WORDS else verification


CLAIM_STATE_WORDS = {
    "verified": N_("verified"),
    "accepted": N_("accepted by a moderator"),
    "unverifiable": N_("counted, not verifiable"),
    "pending": N_("pending"),
    "rejected": N_("rejected"),
}

SHORT_ERRORS = {  # a button's toast: shorter than the error's own message; translated when shown
    "RAID_FULL": N_("The raid is full."),
    "RAID_ENDED": N_("The raid has ended."),
    "NOT_PARTICIPANT": N_("Join the raid first."),
    "BANNED": N_("You are banned from raids here."),
}


_RAID_CHAT = (select(Community.platform, Community.external_id, Raid.channel_id)
              .join(Raid, Raid.community_id == Community.id).where(Raid.id == bindparam("raid_id")))


async def _where_raid_runs(sess: AsyncSession, raid_id: int, chat: ChatRef) -> str | None:
    """`CommandService._raid_in_chat` inside an open read."""
    where = (await sess.execute(_RAID_CHAT, {"raid_id": raid_id})).first()
    if where is None or tuple(where) == (chat.platform, chat.external_id, chat.channel_key):
        return "own"
    return "partner" if await partners.is_partner_chat(sess, raid_id, chat) else None


def _short_error(exc: NubiError) -> Reply:
    text = _(SHORT_ERRORS[exc.code]) if exc.code in SHORT_ERRORS else exc.message
    return Reply(info_view(text), ephemeral=True, error=True)
