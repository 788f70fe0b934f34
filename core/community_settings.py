"""A community's own settings, which its moderators change from chat, REST or MCP.

Settings are named by dotted keys (`verification`, `objectives.like.points`, `bonuses.completion_points`,
`timezone`, `exclude_members`). Raid keys are validated by the very model of the config file's
`[raids]` section (core/config.py), merged over the global defaults exactly as raids read them, so a
value the config file would refuse is refused here too, with the key named. Each change is written
to the audit log in the same transaction; nothing is written when a value is refused.
"""

from __future__ import annotations

import copy
from typing import Any

from pydantic import ValidationError as PydanticError
from sqlalchemy import bindparam, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from core import badges
from core.clock import Clock
from core.config import ACTION_NAMES, Bonuses, RaidsConfig, Settings
from core.directory import ChatRef, MemberRef, ensure_member, seen_in_community
from core.errors import NotFound, ValidationError
from core.i18n import DEFAULT_LANGUAGE, LANGUAGES, _, normalize
from core.moderation import audit
from core.schedules import check_zone
from core.storage.db import Database
from core.storage.models import PLATFORMS, Community, CommunityMember, MemberIdentity, Raid

# The [raids] keys a community may set for itself (the rest are the operator's: intervals, budgets).
RAID_KEYS = (
    ["verification", "default_duration_minutes", "max_participants", "allow_multiple_active", "pin", "partners",
     "default_objectives",
     "claims_per_minute", "min_account_age_days", "min_followers"]
    + [f"objectives.{a}.{f}" for a in ACTION_NAMES for f in ("target", "points")]
    + [f"bonuses.{name}" for name in Bonuses.model_fields]
)
OTHER_KEYS = ["timezone", "exclude_members", "badges", "language"]
KEYS = tuple(RAID_KEYS + OTHER_KEYS)


def deep_merge(base: dict[str, Any], own: dict[str, Any]) -> dict[str, Any]:
    """`own` over `base`, key by key at every depth (a community's one bonus keeps the other four)."""
    out = dict(base)
    for key, value in own.items():
        out[key] = deep_merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def effective_raids(settings: Settings, own: dict[str, Any] | None) -> RaidsConfig:
    """The [raids] config a community's raids run with: its own keys over the global ones."""
    raids = (own or {}).get("raids") or {}
    if not raids:
        return settings.raids
    return RaidsConfig.model_validate(deep_merge(settings.raids.model_dump(), raids))


def _flat(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _check_key(key: str) -> str:
    key = key.strip().lower()
    if key not in KEYS:
        raise ValidationError(_("'{key}' is not a community setting. Settings: {keys}, "
                                "objectives.<action>.target|points, bonuses.<name>, timezone, exclude_members, "
                                "badges, language.").format(key=key[:60], keys=", ".join(KEYS[:8])), field="key")
    return key


def _parse(key: str, value: Any) -> Any:
    """A value typed in chat is text: lists are comma-separated; the model converts the rest."""
    if key == "language" and isinstance(value, str):
        return value.strip().lower()
    if isinstance(value, str) and key in ("default_objectives", "exclude_members"):
        return [v.strip() for v in value.split(",") if v.strip()]
    return value


# Built once: a button press reads it on every interaction (with the raid's chat, core/commands).
_CHAT_SETTINGS = select(Community.settings).where(
    Community.platform == bindparam("platform"), Community.external_id == bindparam("external_id"))


async def chat_language(s: AsyncSession, chat: ChatRef) -> str:
    """In an open read or write: the language of the community a chat belongs to (the default for a
    chat nubi has not met), so a command can read it in the same transaction as its own facts."""
    settings = await s.scalar(_CHAT_SETTINGS, {"platform": chat.platform, "external_id": chat.external_id})
    return normalize((settings or {}).get("language"))


class CommunitySettingsService:
    def __init__(self, db: Database, clock: Clock, settings: Settings) -> None:
        self.db = db
        self.clock = clock
        self.settings = settings
        # Adapters of platforms with roles (Discord) register how a badge's role= is checked there.
        self.role_checks: dict[str, badges.RoleCheck] = {}

    async def show(self, community_id: int) -> dict[str, Any]:
        """{communityId, settings: the community's own keys, effective: every key as raids use it}."""
        own = await self.db.read(lambda s: self._own(s, community_id))
        return self._view(community_id, own)

    async def change(self, community_id: int, changes: dict[str, Any], *, actor: int | None) -> dict[str, Any]:
        """Set (a value) or reset (None) several keys at once: all are applied, or none."""
        if not changes:
            raise ValidationError(_("give at least one setting to change"), field="settings")
        checked = {_check_key(k): _parse(_check_key(k), v) for k, v in changes.items()}
        if checked.get("badges") is not None:
            checked["badges"] = await self._badges(community_id, checked["badges"])
        now = self.clock.now()

        async def op(s: AsyncSession) -> dict[str, Any]:
            own = copy.deepcopy(await self._own(s, community_id))
            for key, value in checked.items():
                _apply(own, key, value)
            self._validate(own, list(checked))
            await s.execute(update(Community).where(Community.id == community_id).values(settings=own))
            if "exclude_members" in checked:
                await self._sync_exclusions(s, community_id, own.get("exclude_members") or [], now)
            for key, value in checked.items():
                await audit(s, community_id, "settings_reset" if value is None else "settings_set", now, actor=actor,
                            reason=key, data={"key": key, "value": value})
            return own

        return self._view(community_id, await self.db.write(op))

    async def timezone(self, community_id: int) -> str:
        own = await self.db.read(lambda s: self._own(s, community_id))
        return str(own.get("timezone") or "UTC")

    async def language(self, community_id: int) -> str:
        """The language the community's members read (core/i18n.py)."""
        settings = await self.db.read(lambda s: s.scalar(select(Community.settings).where(Community.id == community_id)))
        return normalize((settings or {}).get("language"))

    async def language_of_chat(self, chat: ChatRef) -> str:
        """The language of the community a chat belongs to; the default for a chat nubi has not met."""
        return await self.db.read(lambda s: chat_language(s, chat))

    async def language_of_raid(self, raid_id: int) -> str:
        """The language of a raid's posts and report: its community's, as it is now."""
        settings = await self.db.read(lambda s: s.scalar(
            select(Community.settings).join(Raid, Raid.community_id == Community.id).where(Raid.id == raid_id)))
        return normalize((settings or {}).get("language"))

    # -- inside ----------------------------------------------------------------------------------

    async def _badges(self, community_id: int, value: Any) -> list[dict[str, Any]]:
        """Milestones checked, their roles too (by the platform's adapter, before anything is written)."""
        items = badges.parse(value)

        async def where(s: AsyncSession) -> Any:
            return (await s.execute(select(Community.platform, Community.external_id)
                                    .where(Community.id == community_id))).first()

        row = await self.db.read(where)
        if row is None:
            raise NotFound(_("There is no community #{id}.").format(id=community_id))
        items = await badges.resolve_roles(items, row.platform, row.external_id, self.role_checks)
        return [m.stored() for m in items]

    async def _own(self, s: AsyncSession, community_id: int) -> dict[str, Any]:
        row = (await s.execute(select(Community.settings).where(Community.id == community_id))).first()
        if row is None:
            raise NotFound(f"There is no community #{community_id}.")
        return dict(row[0] or {})

    def _validate(self, own: dict[str, Any], keys: list[str]) -> None:
        try:
            effective_raids(self.settings, own)
        except PydanticError as exc:
            err = exc.errors()[0]
            key = ".".join(str(p) for p in err["loc"])
            raise ValidationError(f"{key}: {err['msg']}", field=key) from None
        if own.get("timezone") is not None:
            try:
                check_zone(str(own["timezone"]))
            except ValidationError as exc:
                raise ValidationError(f"timezone: {exc.message}", field="timezone") from None
        if own.get("language") is not None and own["language"] not in LANGUAGES:
            raise ValidationError(_("language: '{value}' is not one of {languages}").format(
                value=str(own["language"])[:20], languages=", ".join(LANGUAGES)),
                                  field="language")
        for entry in own.get("exclude_members") or []:
            platform, _sep, external = str(entry).partition(":")
            if platform not in PLATFORMS or not external or len(entry) > 160:
                raise ValidationError(_("exclude_members: '{entry}' is not <platform>:<user id> "
                                        "(platform: {platforms})").format(entry=str(entry)[:60],
                                                                          platforms=", ".join(PLATFORMS)),
                                      field="exclude_members")

    async def _sync_exclusions(self, s: AsyncSession, community_id: int, listed: list[str], now: Any) -> None:
        """The board leaves off exactly the listed members (they need not have used the bot yet)."""
        await s.execute(update(CommunityMember).where(CommunityMember.community_id == community_id)
                        .values(excluded=False))
        for entry in listed:
            platform, _sep, external = entry.partition(":")
            member_id = await s.scalar(select(MemberIdentity.member_id).where(
                MemberIdentity.platform == platform, MemberIdentity.external_id == external))
            if member_id is None:
                member_id = await ensure_member(s, MemberRef(platform, external), now)
            await seen_in_community(s, community_id, member_id, None, now)
            await s.execute(update(CommunityMember).where(
                CommunityMember.community_id == community_id, CommunityMember.member_id == member_id)
                .values(excluded=True))

    def _view(self, community_id: int, own: dict[str, Any]) -> dict[str, Any]:
        raids = effective_raids(self.settings, own).model_dump()
        effective = {k: v for k, v in _flat(raids).items() if k in RAID_KEYS}
        effective["timezone"] = own.get("timezone") or "UTC"
        effective["exclude_members"] = own.get("exclude_members") or []
        effective["badges"] = badges.text_form(badges.milestones(own))
        effective["language"] = own.get("language") or DEFAULT_LANGUAGE
        mine = _flat(own.get("raids") or {})
        mine.update({k: own[k] for k in OTHER_KEYS if own.get(k) not in (None, [])})
        if "badges" in mine:
            mine["badges"] = effective["badges"]
        return {"communityId": community_id, "settings": mine, "effective": effective}


def _apply(own: dict[str, Any], key: str, value: Any) -> None:
    """Put `value` at `key` (None removes it) in the stored document: raid keys live under "raids"."""
    path = key.split(".") if key in RAID_KEYS else [key]
    node = own.setdefault("raids", {}) if key in RAID_KEYS else own
    for part in path[:-1]:
        node = node.setdefault(part, {})
    if value is None:
        node.pop(path[-1], None)
    else:
        node[path[-1]] = value
    _prune(own)


def _prune(tree: dict[str, Any]) -> None:
    for key in list(tree):
        if isinstance(tree[key], dict):
            _prune(tree[key])
            if not tree[key]:
                del tree[key]
