"""Typed configuration: one TOML file, environment variables on top, validated at start.

Keys are documented in config.example.toml. Every key can be overridden by `NUBI_<SECTION>_<KEY>`
(e.g. NUBI_DATABASE_URL, NUBI_HTTP_PORT, NUBI_TELEGRAM_TOKEN); the session timeouts also answer to
the upstream ElizaOS names (SESSION_DEFAULT_TIMEOUT_MINUTES, ...).
"""

from __future__ import annotations

import difflib
import ipaddress
import json
import os
import tomllib
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic import ValidationError as PydanticValidationError

ACTION_NAMES = ("like", "repost", "reply", "quote", "bookmark", "follow")


class ConfigError(Exception):
    """A configuration that cannot run; `problems` lists each one with its key."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DatabaseConfig(Section):
    url: str = "sqlite+aiosqlite:///nubi.db"
    row_level_security: bool = False
    # None: on for SQLite (its one writer commits a batch at a time). On PostgreSQL only for the writes
    # that contend for the same rows (a raid's joins and claims: batched, their statements pipelined,
    # they ran the burst at 2.0-3.2x the per-command asyncpg program); the others each have a transaction of
    # their own on the pool, where Sessions API posts ran faster than batched (bench/README.md).
    # false: no write batches; true: every write does.
    group_commit: bool | None = None
    # PostgreSQL connections a process holds open. None: five per core, at most 20 (core/storage/lanes.py,
    # default_size); more only take turns at the same cores.
    pool_size: int | None = Field(default=None, ge=1, le=500)

    def group_commit_for(self, url: str) -> bool:
        """Whether every write batches."""
        if self.group_commit is not None:
            return self.group_commit
        return not url.startswith(("postgresql", "postgres"))

    def batch_contended(self) -> bool:
        """Whether the writes that contend for the same rows batch (`Database.write_sql(contended=True)`)."""
        return self.group_commit is not False

    @field_validator("url")
    @classmethod
    def _known_driver(cls, v: str) -> str:
        if not v.startswith(("sqlite", "postgresql", "postgres://")):
            raise ValueError("must be a sqlite+aiosqlite:///file.db or postgresql+asyncpg://... URL")
        return v


class ApiKey(Section):
    """One API key: the key itself, or its SHA-256 (hex) so the config file holds no usable secret."""

    key: SecretStr | None = None
    key_sha256: str | None = None
    community: str = "*"  # "*" for an admin key, else "<platform>:<external id>"

    @field_validator("key_sha256")
    @classmethod
    def _hex_digest(cls, v: str | None) -> str | None:
        if v is not None and (len(v) != 64 or any(c not in "0123456789abcdefABCDEF" for c in v)):
            raise ValueError("must be the 64 hex digits of the key's SHA-256 (`nubi keys new` prints it)")
        return None if v is None else v.lower()

    @field_validator("community")
    @classmethod
    def _community_form(cls, v: str) -> str:
        platform, sep, external = v.partition(":")
        if v != "*" and (not sep or platform not in ("telegram", "discord", "web", "console") or not external):
            raise ValueError("must be \"*\" (admin) or \"<platform>:<chat id>\", e.g. \"telegram:-100123\"")
        return v

    @model_validator(mode="after")
    def _one_form(self) -> ApiKey:
        if (self.key is None) == (self.key_sha256 is None):
            raise ValueError("give exactly one of key or key_sha256")
        return self


class HttpConfig(Section):
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    api_keys: list[ApiKey] = []
    # Host names the app answers to besides the loopback names (DNS-rebinding guard): a public name
    # such as "nubi.example.org"; "name:port" pins a port; "*" turns the check off (not recommended).
    allowed_hosts: list[str] = []
    # Addresses (or CIDR networks) of reverse proxies whose X-Forwarded-For is believed.
    trusted_proxies: list[str] = []
    cors_origins: list[str] = []
    rate_limit_per_minute: int = Field(600, ge=1)
    max_body_bytes: int = Field(1_048_576, ge=1024)


    @field_validator("trusted_proxies")
    @classmethod
    def _networks(cls, v: list[str]) -> list[str]:
        for entry in v:
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError as exc:
                raise ValueError(f"{entry!r} is not an IP address or network") from exc
        return v

    @field_validator("allowed_hosts")
    @classmethod
    def _host_names(cls, v: list[str]) -> list[str]:
        for entry in v:
            if not entry or "/" in entry or " " in entry:
                raise ValueError(f"{entry!r} is not a host name (write e.g. \"nubi.example.org\")")
        return [h.lower() for h in v]


class TelegramConfig(Section):
    token: SecretStr | None = None
    api_base_url: str = "https://api.telegram.org/bot"
    mode: Literal["polling", "webhook"] = "polling"
    webhook_url: str | None = None
    webhook_secret: SecretStr | None = None
    moderator_ids: list[int] = []
    edit_interval_seconds: float = Field(5.0, ge=0.5)
    messages_per_minute: int = Field(20, ge=1, le=30)


class DiscordConfig(Section):
    token: SecretStr | None = None
    # Where discord.py sends REST calls and opens the gateway: Discord's own unless a proxy, a gateway
    # cache or a local test server stands in. Both are process-wide in discord.py (one bot per process).
    api_base_url: str = "https://discord.com/api/v10"
    gateway_url: str = "wss://gateway.discord.gg/"
    moderator_role: str | None = None
    shard_count: int | None = None
    shard_ids: list[int] | None = None
    edit_interval_seconds: float = Field(5.0, ge=0.5)

    @field_validator("api_base_url")
    @classmethod
    def _http_url(cls, v: str) -> str:
        if not v.startswith(("https://", "http://")) or "?" in v:
            raise ValueError("must be an http(s) URL such as https://discord.com/api/v10")
        return v.rstrip("/")

    @field_validator("gateway_url")
    @classmethod
    def _ws_url(cls, v: str) -> str:
        if not v.startswith(("wss://", "ws://")) or "?" in v:
            raise ValueError("must be a ws(s) URL such as wss://gateway.discord.gg/ (without a query)")
        return v


class XConfig(Section):
    bearer_token: SecretStr | None = None
    base_url: str = "https://api.x.com"
    reads_per_raid: int = Field(200, ge=0)
    reads_per_day: int = Field(2000, ge=0)
    sweep_interval_seconds: int = Field(300, ge=30)


class RealtimeConfig(Section):
    redis_url: str | None = None
    # Signs the short-lived Socket.IO session tokens; set the same value on every worker so a token
    # from one verifies on another (random per process when unset).
    token_secret: SecretStr | None = None


class SessionsConfig(Section):
    """Global session timeouts (the ElizaOS defaults), clamped to the ranges of the sessions spec."""

    default_timeout_minutes: int = Field(30, ge=1, le=10080)
    min_timeout_minutes: int = Field(5, ge=1, le=60)
    max_timeout_minutes: int = Field(1440, ge=60, le=10080)
    max_duration_minutes: int = Field(720, ge=60, le=20160)
    warning_threshold_minutes: int = Field(5, ge=1, le=60)
    cleanup_interval_minutes: int = Field(5, ge=1, le=60)
    auto_renew: bool = True


class AgentConfig(Section):
    id: str
    name: str
    timeout_minutes: int | None = None
    auto_renew: bool | None = None
    max_duration_minutes: int | None = None
    warning_threshold_minutes: int | None = None

    @field_validator("id")
    @classmethod
    def _uuid(cls, v: str) -> str:
        try:
            return str(uuid.UUID(v))
        except ValueError as exc:
            raise ValueError("must be a UUID such as 2f6c1f4e-...") from exc


class Objective(Section):
    target: int = Field(ge=1, le=1_000_000)
    points: int = Field(ge=0, le=10_000)


def _default_objectives() -> dict[str, Objective]:
    return {
        "like": Objective(target=50, points=1),
        "repost": Objective(target=25, points=2),
        "reply": Objective(target=10, points=3),
        "quote": Objective(target=5, points=5),
        "bookmark": Objective(target=10, points=1),
        "follow": Objective(target=10, points=2),
    }


class Bonuses(Section):
    early_joiners: int = Field(10, ge=0)
    early_joiner_points: int = Field(5, ge=0)
    speed_window_minutes: int = Field(5, ge=0)
    speed_max_points: int = Field(3, ge=0)
    completion_points: int = Field(10, ge=0)


class RaidsConfig(Section):
    """Community defaults for raids; a community's own settings override them key by key."""

    default_duration_minutes: int = Field(30, ge=1, le=1440)
    max_participants: int = Field(500, ge=1, le=100_000)
    allow_multiple_active: bool = False
    pin: bool = False  # pin the raid post while the raid runs (the bot needs the right to pin)
    partners: bool = False  # post raids in every linked chat too (`/community link`; `partners` on one raid)
    verification: Literal["honor", "proof_link", "x_api", "review"] = "honor"
    default_objectives: list[str] = ["like", "repost", "reply", "quote"]
    objectives: dict[str, Objective] = Field(default_factory=_default_objectives)
    bonuses: Bonuses = Bonuses()
    metrics_interval_seconds: int = Field(60, ge=5)
    lock_grace_minutes: int = Field(5, ge=0)
    # After a raid ends, sweeps and moderators have this long to settle its pending claims; what is
    # still pending then becomes `unverifiable` (no points) with the reason noted. X's recent search
    # reaches 7 days back, so a final sweep later than 6 days could read nothing anyway.
    verification_window_hours: int = Field(24, ge=1, le=144)
    audit_share: float = Field(0.0, ge=0, le=1)
    claims_per_minute: int = Field(30, ge=1)
    min_account_age_days: int = Field(0, ge=0)
    min_followers: int = Field(0, ge=0)

    @field_validator("objectives")
    @classmethod
    def _known_actions(cls, v: dict[str, Objective]) -> dict[str, Objective]:
        unknown = set(v) - set(ACTION_NAMES)
        if unknown:
            raise ValueError(f"unknown action type(s) {sorted(unknown)}; use {', '.join(ACTION_NAMES)}")
        return {**_default_objectives(), **v}

    @field_validator("default_objectives")
    @classmethod
    def _known_defaults(cls, v: list[str]) -> list[str]:
        unknown = set(v) - set(ACTION_NAMES)
        if unknown or not v:
            raise ValueError(f"must list action types from {', '.join(ACTION_NAMES)}")
        return v


class LeaderboardConfig(Section):
    exclude_moderators: bool = True
    exclude_members: list[str] = []  # "<platform>:<user id>"
    default_top: int = Field(10, ge=1, le=50)


class SchedulerConfig(Section):
    enabled: bool = True
    sweep_interval_seconds: int = Field(30, ge=1)


class Settings(Section):
    database: DatabaseConfig = DatabaseConfig()
    http: HttpConfig = HttpConfig()
    telegram: TelegramConfig = TelegramConfig()
    discord: DiscordConfig = DiscordConfig()
    x: XConfig = XConfig()
    realtime: RealtimeConfig = RealtimeConfig()
    sessions: SessionsConfig = SessionsConfig()
    agents: list[AgentConfig] = Field(
        default_factory=lambda: [AgentConfig(id="6f1c3e2a-9b7d-4e5f-8a1b-2c3d4e5f6a7b", name="nubi")]
    )
    raids: RaidsConfig = RaidsConfig()
    leaderboard: LeaderboardConfig = LeaderboardConfig()
    scheduler: SchedulerConfig = SchedulerConfig()

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        s = self.sessions
        if s.min_timeout_minutes > s.max_timeout_minutes:
            raise ValueError("sessions.min_timeout_minutes must not exceed sessions.max_timeout_minutes")
        ids = [a.id for a in self.agents]
        if len(ids) != len(set(ids)):
            raise ValueError("agents: two agents share one id")
        if self.telegram.mode == "webhook" and not self.telegram.webhook_url:
            raise ValueError("telegram.webhook_url is required when telegram.mode = 'webhook'")
        return self

    def agent(self, agent_id: str) -> AgentConfig | None:
        return next((a for a in self.agents if a.id == agent_id), None)


SESSION_ENV = {
    "SESSION_DEFAULT_TIMEOUT_MINUTES": "default_timeout_minutes",
    "SESSION_MIN_TIMEOUT_MINUTES": "min_timeout_minutes",
    "SESSION_MAX_TIMEOUT_MINUTES": "max_timeout_minutes",
    "SESSION_MAX_DURATION_MINUTES": "max_duration_minutes",
    "SESSION_WARNING_THRESHOLD_MINUTES": "warning_threshold_minutes",
    "SESSION_CLEANUP_INTERVAL_MINUTES": "cleanup_interval_minutes",
}

# Keys whose values are structured: an env override carries JSON.
_JSON_KEYS = {"api_keys", "allowed_hosts", "trusted_proxies", "cors_origins", "moderator_ids", "shard_ids", "exclude_members", "default_objectives"}


def _env_value(key: str, raw: str) -> Any:
    if key in _JSON_KEYS:
        try:
            return json.loads(raw)
        except json.JSONDecodeError:
            return [p.strip() for p in raw.split(",") if p.strip()]
    return raw


def apply_env(data: dict[str, Any], env: Mapping[str, str]) -> dict[str, Any]:
    data = {k: (dict(v) if isinstance(v, dict) else v) for k, v in data.items()}
    for section, model in Settings.model_fields.items():
        ann = model.annotation
        if not (isinstance(ann, type) and issubclass(ann, Section)):
            continue
        for key in ann.model_fields:
            name = f"NUBI_{section}_{key}".upper()
            if name in env:
                data.setdefault(section, {})[key] = _env_value(key, env[name])
    for name, key in SESSION_ENV.items():
        if name in env:
            data.setdefault("sessions", {})[key] = env[name]
    return data


def known_env_names() -> set[str]:
    """Every environment variable nubi reads: NUBI_<SECTION>_<KEY> for each key, and the ElizaOS names."""
    names = set(SESSION_ENV)
    for section, model in Settings.model_fields.items():
        ann = model.annotation
        if isinstance(ann, type) and issubclass(ann, Section):
            names.update(f"NUBI_{section}_{key}".upper() for key in ann.model_fields)
    return names


def unknown_env(env: Mapping[str, str]) -> list[tuple[str, str | None]]:
    """NUBI_* variables nubi does not read (a misspelling is otherwise ignored in silence), each with
    the closest known name when one is close."""
    known = known_env_names()
    return [(name, next(iter(difflib.get_close_matches(name, known, n=1, cutoff=0.8)), None))
            for name in sorted(env) if name.startswith("NUBI_") and name not in known]


def _describe(err: PydanticValidationError) -> list[str]:
    problems = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "config"
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = "is not a known key (see config.example.toml)"
        problems.append(f"{loc}: {msg}")
    return problems


def load_settings(path: str | Path | None = None, env: Mapping[str, str] | None = None) -> Settings:
    """Read `path` (or ./config.toml when present, else nothing), apply the environment, validate."""
    env = os.environ if env is None else env
    data: dict[str, Any] = {}
    if path is None and Path("config.toml").is_file():
        path = "config.toml"
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError([f"config file {p} does not exist"])
        try:
            data = tomllib.loads(p.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError([f"{p}: not valid TOML ({exc})"]) from exc
    try:
        return Settings.model_validate(apply_env(data, env))
    except PydanticValidationError as exc:
        raise ConfigError(_describe(exc)) from exc
