"""Slash-command descriptions in the members' language: discord.py's translator fed by nubi's catalogs.

`nubi discord sync` (and the running bot's tree) send `description_localizations` for Spanish and
Russian Discord clients, and the localized names of fixed choices; command and option names stay the
same everywhere. The fake Discord's bulk overwrite checks what Discord documents (locale keys, 1-100
characters, names by the pattern) and keeps what was synced, so these tests read what arrived.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import discord
import pytest
from discord.app_commands import TranslationContext, TranslationContextLocation, locale_str

from adapters.discord import chat_lock
from adapters.discord.adapter import sync_commands
from adapters.discord.commands import CHOICE_NAMES, COMMANDS, DISCORD_LOCALES, CatalogTranslator
from adapters.discord.endpoints import use_endpoints
from core.config import DiscordConfig
from core.i18n import LANGUAGES, translations
from tests.fakes.discord_api import APPLICATION_ID, DEFAULT_TOKEN, FakeDiscordAPI
from tests.test_discord_adapter import GUILD_ID, Bot, guild
from tests.test_discord_adapter import bot as bot  # noqa: F401  (the fixture, on both databases)

SPANISH = ("es-ES", "es-419")


def nodes(commands: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Every command, subcommand group, subcommand and option of a synced tree."""
    for command in commands:
        yield command
        yield from nodes(command.get("options") or [])


def by_name(items: list[dict[str, Any]], name: str) -> dict[str, Any]:
    [found] = [i for i in items if i["name"] == name]
    return found


def expected(english: str) -> dict[str, str]:
    """What the catalogs say for an English text, per Discord locale (none where it stays English)."""
    spanish, russian = translations("es").gettext(english), translations("ru").gettext(english)
    wanted = {locale: spanish for locale in SPANISH} if spanish != english else {}
    return wanted | ({"ru": russian} if russian != english else {})


@pytest.fixture
async def fake() -> AsyncIterator[FakeDiscordAPI]:
    async with FakeDiscordAPI() as api:
        yield api


async def test_sync_sends_every_description_in_spanish_and_russian_and_keeps_the_names(
    fake: FakeDiscordAPI,
) -> None:
    config = DiscordConfig(token=DEFAULT_TOKEN, api_base_url=fake.base_url, gateway_url=fake.gateway_url)
    assert await sync_commands(config, None) == len(COMMANDS)

    published = fake.commands[None]
    raid = by_name(published, "raid")
    assert raid["description"] == "Run raids in this channel"
    assert raid["description_localizations"] == {
        "es-ES": "Dirigir raids en este canal", "es-419": "Dirigir raids en este canal",
        "ru": "Проводить рейды в этом канале"}
    start = by_name(raid["options"], "start")
    assert start["description_localizations"]["es-ES"] == "Empezar un raid sobre una publicación"
    assert by_name(start["options"], "thread")["description_localizations"]["ru"] == (
        "Провести рейд в новой ветке этого канала")
    assert by_name(published, "join")["description_localizations"]["es-419"] == (
        "Unirte al raid en curso en este canal")

    everything = list(nodes(published))
    assert len(everything) > 80  # 16 commands, their subcommands and options
    for node in everything:
        assert not node.get("name_localizations"), node["name"]  # /raid start is /raid start everywhere
        assert node["description_localizations"] == expected(node["description"]), node["name"]
        assert set(node["description_localizations"]) == {"es-ES", "es-419", "ru"}, node["name"]  # none left out


async def test_fixed_choices_show_their_names_in_the_members_language(fake: FakeDiscordAPI) -> None:
    fake.add_guild(guild())  # a guild sync, for the server nubi is in
    config = DiscordConfig(token=DEFAULT_TOKEN, api_base_url=fake.base_url, gateway_url=fake.gateway_url)
    await sync_commands(config, GUILD_ID)

    leaderboard = by_name(fake.commands[GUILD_ID], "leaderboard")
    scope = by_name(leaderboard["options"], "scope")
    week = by_name(scope["choices"], "week")
    assert week["value"] == "week"  # what core receives does not change
    assert week["name_localizations"] == {"es-ES": "semana", "es-419": "semana", "ru": "неделя"}
    assert by_name(scope["choices"], "raid")["name_localizations"] == {"ru": "рейд"}  # "raid" in Spanish too
    verification = by_name(by_name(by_name(fake.commands[GUILD_ID], "raid")["options"], "start")["options"],
                           "verification")
    assert by_name(verification["choices"], "x_api")["name_localizations"]["es-ES"] == "API de X"

    choices = [c for node in nodes(fake.commands[GUILD_ID]) for c in node.get("choices") or []]
    assert {c["name"] for c in choices} == set(CHOICE_NAMES)  # every fixed choice is in the catalogs
    for choice in choices:
        assert choice["name_localizations"] == expected(choice["name"])


async def test_the_running_bot_syncs_its_tree_localized(bot: Bot) -> None:  # noqa: F811
    synced = await bot.h.client.tree.sync()  # type: ignore[attr-defined]

    assert {c.name for c in synced} == {c.name for c in COMMANDS}
    me = by_name(bot.fake.commands[None], "me")
    assert me["description_localizations"] == {
        "es-ES": "Tus puntos, tu puesto y tu racha", "es-419": "Tus puntos, tu puesto y tu racha",
        "ru": "Ваши баллы, место и серия"}


async def test_the_fake_refuses_what_discord_documents_as_invalid(fake: FakeDiscordAPI) -> None:
    use_endpoints(DiscordConfig(api_base_url=fake.base_url, gateway_url=fake.gateway_url))
    client = discord.Client(intents=discord.Intents.none())
    good = {"name": "join", "type": 1, "description": "Join the raid",
            "description_localizations": {"es-ES": "Unirte al raid", "ru": "Присоединиться"}}
    bad = [
        {**good, "description_localizations": {"es": "Unirte al raid"}},  # "es" is not a Discord locale
        {**good, "description_localizations": {"ru": "р" * 101}},  # more than 100 characters
        {**good, "description_localizations": {"ru": ""}},
        {**good, "name_localizations": {"xx-YY": "unirse"}},
        {**good, "name_localizations": {"es-ES": "Unirse Ya"}},  # a slash command's name: lower case, no space
        {**good, "description": "d" * 101},
        {**good, "options": [{"name": "scope", "type": 3, "description": "Scope",
                              "choices": [{"name": "week", "value": "week",
                                           "name_localizations": {"ru": "н" * 101}}]}]},
        {**good, "options": [{"name": "a", "type": 3, "description": "A"},
                             {"name": "b", "type": 3, "description": "B", "required": True}]},  # required after optional
    ]
    async with client:
        await client.login(DEFAULT_TOKEN)
        [stored] = await client.http.bulk_upsert_global_commands(APPLICATION_ID, [good])
        assert stored["description_localizations"] == good["description_localizations"]
        for payload in bad:
            with pytest.raises(discord.HTTPException) as refused:
                await client.http.bulk_upsert_global_commands(APPLICATION_ID, [payload])
            assert (refused.value.status, refused.value.code) == (400, 50035), payload
        assert [c["description_localizations"] for c in fake.commands[None]] == [good["description_localizations"]]
        user_command = {"name": "Raid Stats", "type": 2}  # user commands may have capitals and spaces
        [kept] = await client.http.bulk_upsert_global_commands(APPLICATION_ID, [user_command])
        assert kept["name"] == "Raid Stats"


async def test_the_translator_answers_descriptions_only_in_shipped_languages() -> None:
    translator = CatalogTranslator()
    description = TranslationContext(TranslationContextLocation.command_description, None)
    name = TranslationContext(TranslationContextLocation.command_name, None)
    text = locale_str("Start a raid on a post")

    assert await translator.translate(text, discord.Locale.latin_american_spanish, description) == (
        "Empezar un raid sobre una publicación")
    assert await translator.translate(text, discord.Locale.russian, description) == "Начать рейд на пост"
    assert await translator.translate(text, discord.Locale.german, description) is None  # no German catalog
    assert await translator.translate(text, discord.Locale.american_english, description) is None
    assert await translator.translate(locale_str("start"), discord.Locale.spain_spanish, name) is None
    assert await translator.translate(locale_str("not a catalog text"), discord.Locale.russian, description) is None
    # a text Discord would refuse (its Spanish is over 100 characters) stays English, never a failed sync
    long_note = chat_lock.NO_PERMISSION_NOTE
    assert len(translations("es").gettext(long_note)) > 100
    assert await translator.translate(locale_str(long_note), discord.Locale.spain_spanish, description) is None

    assert set(DISCORD_LOCALES) == set(LANGUAGES) - {"en"}  # every shipped catalog reaches Discord
