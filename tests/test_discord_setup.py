"""Setting nubi up on a Discord server: the invite URL, the one permission list behind it and the
pre-start check, docs/discord.md, and the address settings."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import discord
import pytest

from adapters.discord import permissions
from adapters.discord.adapter import application_id
from bot.cli import main
from core.config import ConfigError, DiscordConfig, load_settings
from tests.fakes.discord_api import APPLICATION_ID, DEFAULT_TOKEN, FakeDiscordAPI

DOCS = Path(__file__).resolve().parent.parent / "docs" / "discord.md"


def from_the_list() -> int:
    """The permission integer derived from the code's list, flag by flag."""
    value = 0
    for need in permissions.NEEDED:
        value |= discord.Permissions(**{need.flag: True}).value
    return value


def test_nubi_discord_invite_prints_exactly_the_listed_permissions(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["discord", "invite", "--application-id", "123456789012345678"]) == 0

    url = capsys.readouterr().out.strip()
    parts = urlsplit(url)
    query = parse_qs(parts.query)
    assert (parts.scheme, parts.netloc, parts.path) == ("https", "discord.com", "/oauth2/authorize")
    assert query["client_id"] == ["123456789012345678"]
    assert query["scope"] == ["bot applications.commands"]
    assert int(query["permissions"][0]) == from_the_list()
    assert not int(query["permissions"][0]) & discord.Permissions(administrator=True).value


def test_the_pre_start_check_uses_the_same_list() -> None:
    everything = discord.Permissions(from_the_list())
    assert permissions.missing(everything, lock=True, thread=True) == []
    assert permissions.missing(everything, lock=True, thread=False) == []
    for need in permissions.NEEDED:
        without = discord.Permissions(from_the_list() & ~discord.Permissions(**{need.flag: True}).value)
        assert permissions.missing(without, lock=True, thread=True) == (
            [] if need.optional or need.channel_only else [need])
        assert permissions.missing(without, lock=True, thread=False) == (
            [] if need.optional or need.thread_only else [need])
        assert permissions.missing(without, lock=False) == (
            [] if need.lock_only or need.thread_only or need.optional else [need])
    assert [n.label for n in permissions.NEEDED if n.lock_only] == ["Manage Roles", "Manage Threads"]
    assert [n.label for n in permissions.NEEDED if n.optional] == ["Pin Messages"]  # never refuses a raid
    assert [n.label for n in permissions.NEEDED if n.thread_only] == [
        "Create Public Threads", "Send Messages in Threads", "Manage Threads"]
    # a channel's lock edits its overwrites; a thread's lock locks the thread instead
    assert [n.label for n in permissions.NEEDED if n.channel_only] == ["Manage Roles"]


def test_the_docs_list_every_permission_and_the_invite_value() -> None:
    text = DOCS.read_text()
    for need in permissions.NEEDED:
        assert f"| {need.label} | {need.why}" in text, need.label
    assert f"permissions={from_the_list()}" in text and f"**{from_the_list()}**" in text
    assert "Guilds" in text and "Message Content" in text  # the intents, used and not


def test_invite_without_an_id_or_a_token_is_a_one_line_error(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("NUBI_DISCORD_TOKEN", raising=False)
    monkeypatch.chdir(tmp_path)
    assert main(["discord", "invite"]) == 1
    err = capsys.readouterr().err.strip()
    assert err == "nubi: pass --application-id, or set discord.token (NUBI_DISCORD_TOKEN) to look it up"
    assert main(["discord", "invite", "--application-id", "0"]) == 1
    assert "positive" in capsys.readouterr().err


async def test_the_application_id_is_looked_up_with_the_token_at_the_configured_address() -> None:
    async with FakeDiscordAPI() as fake:
        config = DiscordConfig(token=DEFAULT_TOKEN, api_base_url=fake.base_url, gateway_url=fake.gateway_url)
        assert await application_id(config) == APPLICATION_ID
        assert [c.path for c in fake.calls] == ["/users/@me", "/oauth2/applications/@me", "/oauth2/applications/@me"]


def test_address_settings_default_to_discord_and_are_validated() -> None:
    assert (DiscordConfig().api_base_url, DiscordConfig().gateway_url) == (
        "https://discord.com/api/v10", "wss://gateway.discord.gg/")
    settings = load_settings(None, env={"NUBI_DISCORD_API_BASE_URL": "http://127.0.0.1:9/api/v10/",
                                        "NUBI_DISCORD_GATEWAY_URL": "ws://127.0.0.1:9/gateway"})
    assert settings.discord.api_base_url == "http://127.0.0.1:9/api/v10"  # no trailing slash
    assert settings.discord.gateway_url == "ws://127.0.0.1:9/gateway"
    with pytest.raises(ConfigError) as bad:
        load_settings(None, env={"NUBI_DISCORD_API_BASE_URL": "discord.com", "NUBI_DISCORD_GATEWAY_URL": "https://x"})
    assert any("discord.api_base_url" in p for p in bad.value.problems)
    assert any("discord.gateway_url" in p for p in bad.value.problems)
