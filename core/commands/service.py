"""Dispatch: a parsed command (from any channel) becomes core calls and a platform-neutral reply."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from sqlalchemy import select

from core import access
from core.badges import MEDAL
from core.context import claim_words
from core.directory import ChatRef, MemberRef, ensure_community, ensure_member, seen_in_community
from core.errors import NoActiveRaid, NubiError, RaidNotFound
from core.i18n import _
from core.member_links.service import CODE_TTL
from core.raids.model import ACTION_LABELS, RaidProgress, RaidSpec
from core.storage.models import Community, Raid
from core.targets import Mention, resolve_target
from core.views import View, info_view, leaderboard_view, parse_custom_id, raid_view, report_view

from . import parser as p

if TYPE_CHECKING:
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

    @property
    def text(self) -> str:
        return self.view.text


def error_reply(exc: Exception) -> Reply:
    if isinstance(exc, NubiError):
        return Reply(info_view(exc.message), ephemeral=True, error=True)
    log.error("unexpected error in a command", exc_info=exc)
    return Reply(info_view("Something went wrong, try again."), ephemeral=True, error=True)


def _say(text: str, *, ephemeral: bool = False) -> Reply:
    return Reply(info_view(text), ephemeral=ephemeral)


def help_text(is_moderator: bool) -> str:
    lines = [
        "nubi raids: join the push on a post, do the actions, claim them, climb the board.",
        "",
        "Member commands:",
        "/join: join the active raid",
        "/claim <action> [proof-url]: claim an action you did (like, repost, reply, quote, bookmark, follow)",
        "/leaderboard [raid|day|week|month|all]: the board",
        "/me: your points, rank and streak",
        "/link <x-handle>: link your X account",
        _("/link account: link your Telegram and Discord accounts (one score, one place on the board)"),
    ]
    if is_moderator:
        lines += [
            "",
            "Moderator commands:",
            p.USAGE["raid start"],
            "/raid end | /raid cancel | /raid status",
            "/unlock: lift the chat lock now",
            p.USAGE["ban"] + " | " + p.USAGE["unban"],
            p.USAGE["points"],
            p.USAGE["schedule leaderboard"],
            "/schedule list | /schedule remove <id>",
            p.USAGE["review"],
            p.USAGE["settings"],
            _("{usage}: approve linking two accounts that both hold points here").format(usage=p.USAGE["member merge"]),
            "",
            "Points are recognition inside this community. X's developer policy forbids paying or rewarding "
            "people (with money or anything virtual) for actions on X; what a community does with its points "
            "is its own decision, and X-API verification is optional.",
        ]
    return "\n".join(lines)


class CommandService:
    def __init__(self, services: Services) -> None:
        self.s = services

    async def handle_text(self, ctx: ChatContext, text: str) -> Reply | None:
        """A chat message: None when it is not a command, else the reply (errors included)."""
        try:
            cmd = p.parse(text)
        except NubiError as exc:
            return error_reply(exc)
        if cmd is None:
            return None
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
        here = access.chat_community(ctx.chat)
        if isinstance(cmd, p.MODERATOR_TYPES) and not access.may_moderate(
                access.chat_caller(ctx.chat, moderator=ctx.is_moderator), here):
            return _say("Sorry, only moderators can do that here.", ephemeral=True)
        try:
            if not ctx.private and not isinstance(cmd, p.Join | p.Claim):  # joining records it itself
                await self._seen(ctx)
            return await self._run(ctx, cmd)
        except Exception as exc:  # mapped in one place: domain errors to words, the rest logged
            return error_reply(exc)

    # -- buttons -------------------------------------------------------------------------------

    async def press(self, ctx: ChatContext, custom_id: str) -> Reply:
        """A raid-post button. The reply text is short: it becomes a toast or an ephemeral message."""
        parsed = parse_custom_id(custom_id)
        if parsed is None:
            return _say("That button is no longer valid.", ephemeral=True)
        action, raid_id, arg = parsed
        try:
            if not await self._raid_in_chat(raid_id, ctx.chat):
                log.warning("refused a %s press on raid %s from %s:%s%s (not that chat's raid), member %s",
                            action, raid_id, ctx.chat.platform, ctx.chat.external_id,
                            f" channel {ctx.chat.channel}" if ctx.chat.channel else "", ctx.member.external_id)
                return _say("That button belongs to a raid in another chat.", ephemeral=True)
            if action == "join":
                r = await self.s.raids.join(raid_id, ctx.member, is_moderator=ctx.platform_moderator)
                if r.already:
                    return _say(f"You're already in raid #{raid_id} (raider #{r.position}).", ephemeral=True)
                bonus = f" +{r.bonus} early bird" if r.bonus else ""
                return _say(f"Joined raid #{raid_id} as raider #{r.position}!{bonus}", ephemeral=True)
            if action == "claim" and arg:
                return await self._claim(ctx, raid_id, p.Claim(arg))
            if action == "stats":
                return await self._my_raid_stats(ctx, raid_id)
        except NubiError as exc:
            return _short_error(exc)
        except Exception as exc:
            return error_reply(exc)
        return _say("That button is no longer valid.", ephemeral=True)

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
            return _say("Use this in the group where the raid runs.", ephemeral=True)
        if isinstance(cmd, p.Join):
            raid_id = await s.raids.active_raid_id(ctx.chat)
            r = await s.raids.join(raid_id, ctx.member, is_moderator=ctx.platform_moderator)
            if r.already:
                return _say(f"You're already in raid #{raid_id} (raider #{r.position}).", ephemeral=True)
            bonus = f" (+{r.bonus} early-bird points)" if r.bonus else ""
            return _say(f"{ctx.member.display_name} joined raid #{raid_id} as raider #{r.position}{bonus}.")
        if isinstance(cmd, p.Claim):
            raid_id = await s.raids.active_raid_id(ctx.chat)
            return await self._claim(ctx, raid_id, cmd)
        if isinstance(cmd, p.RaidStart):
            spec = RaidSpec(cmd.url, cmd.objectives, cmd.points, cmd.duration_seconds, cmd.max_participants,
                            cmd.lock, cmd.replace, cmd.verification, pin=cmd.pin, thread=ctx.thread,
                            in_thread=cmd.thread)
            progress = await s.raids.start(ctx.chat, spec, by=ctx.member)
            return Reply(raid_view(progress), quiet=True, raid=progress)
        if isinstance(cmd, p.RaidEnd):
            raid_id = await s.raids.active_raid_id(ctx.chat)
            if cmd.cancel:
                await s.raids.end(raid_id, status="cancelled", reason="cancelled by a moderator",
                                  cause="cancelled_by_moderator")
            else:
                await s.raids.end(raid_id, reason="ended by a moderator", cause="ended_by_moderator")
            report = await s.raids.report(raid_id)
            return Reply(report_view(report) if report else info_view(f"Raid #{raid_id} ended."), quiet=True)
        if isinstance(cmd, p.RaidStatus):
            raid_id = await s.raids.active_raid_id(ctx.chat)
            progress = await s.raids.progress(raid_id)
            return Reply(raid_view(progress), raid=progress)
        community_id = await self._community(ctx)
        if isinstance(cmd, p.Unlock):
            released = await s.locks.unlock(community_id, "unlocked by a moderator", channel=ctx.chat.channel_key)
            return _say("Chat unlocked." if released else "The chat is not locked.")
        if isinstance(cmd, p.BanCmd | p.UnbanCmd | p.PointsCmd):
            return await self._moderate(ctx, community_id, cmd)
        if isinstance(cmd, p.ScheduleAdd):
            actor = await self._member_id(ctx)
            tz = cmd.tz or await s.community_settings.timezone(community_id)
            sched = await s.schedules.add(community_id, cmd.cron, cmd.window, top_n=cmd.top, tz=tz, created_by=actor,
                                          channel=ctx.chat.channel_key)
            return _say(f"Schedule #{sched.id}: the {cmd.window} top {cmd.top} at '{sched.cron}' ({sched.timezone}).")
        if isinstance(cmd, p.ScheduleList):
            items = await s.schedules.list(community_id)
            if not items:
                return _say("No scheduled announcements here.", ephemeral=True)
            return _say("\n".join(f"#{x.id}: {x.window} top {x.top_n} at '{x.cron}' ({x.timezone})"
                                  + (f" in <#{x.channel}>" if x.channel else "") for x in items),
                        ephemeral=True)
        if isinstance(cmd, p.ScheduleRemove):
            ok = await s.schedules.remove(community_id, cmd.schedule_id)
            return _say(f"Schedule #{cmd.schedule_id} removed." if ok else f"There is no schedule #{cmd.schedule_id} here.",
                        ephemeral=True)
        if isinstance(cmd, p.Review):
            return await self._review(ctx, community_id, cmd)
        if isinstance(cmd, p.SettingsShow | p.SettingsChange):
            return await self._settings(ctx, community_id, cmd)
        if isinstance(cmd, p.MemberMerge):
            return await self._member_merge(ctx, community_id, cmd)
        return _say("I don't know that command. Try /help.", ephemeral=True)

    async def _claim(self, ctx: ChatContext, raid_id: int, cmd: p.Claim) -> Reply:
        r = await self.s.raids.claim(raid_id, ctx.member, cmd.action, proof_url=cmd.proof_url)
        name = ACTION_LABELS[cmd.action][0]
        if r.already:
            return _say(f"You already claimed {name} ({_state(r.verification)}).", ephemeral=True)
        if r.verification == "pending":
            return _say(f"{name.capitalize()} claim recorded: waiting for verification.", ephemeral=True)
        extra = f" (+{r.completion_bonus} for completing every objective)" if r.completion_bonus else ""
        return _say(f"{name.capitalize()} claimed: +{r.points}{extra}", ephemeral=True)

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
            return _say(f"You haven't joined raid #{raid_id} yet.", ephemeral=True)
        part, claims = found
        listed = ", ".join(f"{a} ({_state(v)})" for a, v in claims) or "no claims yet"
        return _say(f"Raid #{raid_id}: raider #{part.join_position}, {part.points} pts; {listed}.", ephemeral=True)

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
            lines.append(f"X: @{m['xHandle']}" + ("" if m["xHandleVerified"] else " (not proven)"))
        else:
            lines.append("X: not linked (use /link <handle>)")
        standings = context["standings"]
        if not ctx.private:
            cid = await self._community(ctx)
            standings = [st for st in standings if st["communityId"] == cid]
        for st in standings:
            rank = f"#{st['rank']}" if st["rank"] else "unranked"
            week = f"#{st['weekRank']}" if st["weekRank"] else "unranked"
            where = "" if not ctx.private else f"community {st['communityId']}: "
            lines.append(f"{where}{st['points']} pts all time ({rank}), {st['weekPoints']} this week ({week})")
            if st.get("claims"):
                lines.append(f"{where}claims: {claim_words(st['claims'])}")
            earned = await s.badges.of_member(st["communityId"], member_id)
            if earned:
                lines.append(_("{where}Badges: {badges}").format(
                    where=where, badges=", ".join(f"{MEDAL} {b}" for b in earned)))
        if not standings:
            lines.append("No points yet.")
        lines.append(f"Streak: {context['streakDays']} day(s); raids joined recently: {len(context['recentRaids'])}")
        return _say("\n".join(lines), ephemeral=True)

    async def _link(self, ctx: ChatContext, cmd: p.Link) -> Reply:
        if cmd.verify:
            verifier = getattr(self.s, "link_verifier", None)
            if verifier is None:
                return _say("Link proving needs the X API, which this bot has not been given. "
                            "Your link stays unproven.", ephemeral=True)
            return _say(await verifier(ctx.member), ephemeral=True)
        _linked, handle = await self.s.links.link(ctx.member, cmd.handle or "")
        proof = getattr(self.s, "link_challenge", None)
        if proof is not None:
            return _say(await proof(ctx.member, handle), ephemeral=True)
        return _say(f"Linked @{handle} (unproven: this bot has no X API access to prove it).", ephemeral=True)

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
            return _say(f"{who} is banned from raids here." if done else f"{who} was already banned.")
        if isinstance(cmd, p.UnbanCmd):
            done = await s.moderation.unban(community_id, target.member_id, actor=actor)
            return _say(f"{who} may raid again." if done else f"{who} was not banned.")
        await s.moderation.adjust_points(community_id, target.member_id, cmd.amount, cmd.reason, actor=actor)
        verb = "added to" if cmd.amount > 0 else "removed from"
        return _say(f"{abs(cmd.amount)} points {verb} {who}: {cmd.reason}")

    async def _review(self, ctx: ChatContext, community_id: int, cmd: p.Review) -> Reply:
        s = self.s
        if cmd.decision == "links":
            return await self._refused_links(community_id)
        if cmd.decision is None:
            items = await s.raids.review_queue(community_id=community_id)
            if not items:
                return _say("No claims are waiting for review.", ephemeral=True)
            lines = [f"#{i.claim_id} raid #{i.raid_id}: {i.name} claims {i.action}"
                     + (f" — {i.proof_url}" if i.proof_url else "") for i in items]
            return _say("Waiting for review:\n" + "\n".join(lines) + "\nUse /review accept|reject <id>.",
                        ephemeral=True)
        actor = await self._member_id(ctx)
        if cmd.decision == "revoke":
            taken = await s.raids.revoke(cmd.claim_id or 0, reviewer_id=actor, reason=cmd.reason,
                                         community_id=community_id)
            return _say(f"Claim #{cmd.claim_id} revoked: -{taken} points"
                        + (f" ({cmd.reason})." if cmd.reason else "."), ephemeral=True)
        r = await s.raids.review(cmd.claim_id or 0, cmd.decision == "accept", reviewer_id=actor,
                                 community_id=community_id)
        if r.already:
            return _say(f"Claim #{cmd.claim_id} was already settled ({_state(r.verification)}).", ephemeral=True)
        if cmd.decision == "accept":
            return _say(f"Claim #{cmd.claim_id} accepted: +{r.points + r.completion_bonus}.", ephemeral=True)
        return _say(f"Claim #{cmd.claim_id} rejected.", ephemeral=True)

    async def _refused_links(self, community_id: int) -> Reply:
        """Handle links /link refused because another member holds the handle, in this community."""
        conflicts = await self.s.links.conflicts(community_id=community_id, limit=20)
        if not conflicts:
            return _say("No refused handle links here.", ephemeral=True)
        lines = [
            f"@{c['handle']}: asked for by {c['claimantName']} (member {c['claimantMemberId']}), held by "
            + (f"{c['ownerName']} (member {c['ownerMemberId']})" if c["ownerMemberId"] else "nobody now")
            + f", {c['at'][:16].replace('T', ' ')} UTC"
            for c in conflicts
        ]
        return _say("Refused handle links:\n" + "\n".join(lines), ephemeral=True)

    async def _settings(self, ctx: ChatContext, community_id: int, cmd: p.SettingsShow | p.SettingsChange) -> Reply:
        s = self.s
        if isinstance(cmd, p.SettingsChange):
            actor = await self._member_id(ctx)
            view = await s.community_settings.change(community_id, {cmd.key: cmd.value}, actor=actor)
            now = view["effective"].get(cmd.key)
            if cmd.value is None:
                return _say(f"{cmd.key} is back to the default: {_setting(now)}.")
            return _say(f"{cmd.key} is now {_setting(now)} here.")
        view = await s.community_settings.show(community_id)
        own = view["settings"]
        lines = [f"{k} = {_setting(v)}" + (" (set here)" if k in own else "") for k, v in view["effective"].items()]
        return _say("Settings of this community:\n" + "\n".join(lines)
                    + ("\nModerators change them with /settings set <key> <value> or /settings reset <key>."
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

    async def _raid_in_chat(self, raid_id: int, chat: ChatRef) -> bool:
        """A raid's buttons act only in the chat the raid runs in (an unknown raid answers for itself):
        its community, and on Discord its channel."""
        async def op(sess):  # type: ignore[no-untyped-def]
            return (await sess.execute(
                select(Community.platform, Community.external_id, Raid.channel_id)
                .join(Raid, Raid.community_id == Community.id)
                .where(Raid.id == raid_id))).first()

        where = await self.s.db.read(op)
        return where is None or tuple(where) == (chat.platform, chat.external_id, chat.channel_key)

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
            raise RaidNotFound("No raid has run here yet. Try /leaderboard week.")
        return raid_id


def _setting(value: object) -> str:
    if isinstance(value, list):
        return ", ".join(str(v) for v in value) or "none"
    return str(value).lower() if isinstance(value, bool) else str(value)


def _state(verification: str) -> str:
    return {"verified": "verified", "accepted": "accepted by a moderator", "unverifiable": "counted, not verifiable",
            "pending": "pending", "rejected": "rejected"}.get(verification, verification)


SHORT_ERRORS = {
    "RAID_FULL": "The raid is full.",
    "RAID_ENDED": "The raid has ended.",
    "NOT_PARTICIPANT": "Join the raid first.",
    "BANNED": "You are banned from raids here.",
}


def _short_error(exc: NubiError) -> Reply:
    return Reply(info_view(SHORT_ERRORS.get(exc.code, exc.message)), ephemeral=True, error=True)
