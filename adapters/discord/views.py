"""Persistent raid-post buttons.

The buttons are one DynamicItem class matched by a template over core's custom ids
(`nubi:join:<raid>`, `nubi:claim:<raid>:<action>`, `nubi:stats:<raid>`), registered once per client
in setup_hook. Every raid post, old or new, is served by it with no per-message state, so a press on
a post made before a restart still works. The press itself is core's (`services.commands.press`).
"""

from __future__ import annotations

import logging
import re
from typing import Any, Protocol

import discord

from core.views import Button

log = logging.getLogger(__name__)

CUSTOM_ID = re.compile(r"nubi:(?:join|claim|stats):\d+(?::[a-z_]+)?")
STYLES = {
    "join": discord.ButtonStyle.success,
    "claim": discord.ButtonStyle.primary,
    "stats": discord.ButtonStyle.secondary,
}
MAX_BUTTONS = 25  # 5 rows of 5


class ButtonHandler(Protocol):
    async def on_button(self, interaction: discord.Interaction[Any], custom_id: str) -> None: ...


class RaidButton(discord.ui.DynamicItem[discord.ui.Button[Any]], template=CUSTOM_ID):
    """Any nubi raid button; the custom id says which raid and what to do."""

    def __init__(self, button: discord.ui.Button[Any]) -> None:
        super().__init__(button)

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction[Any], item: discord.ui.Item[Any], match: re.Match[str], /
    ) -> RaidButton:
        assert isinstance(item, discord.ui.Button)
        return cls(discord.ui.Button(label=item.label, style=item.style, custom_id=item.custom_id))

    async def callback(self, interaction: discord.Interaction[Any]) -> None:
        handler: ButtonHandler | None = getattr(interaction.client, "nubi", None)
        if handler is None:  # a client without the adapter (e.g. the command-sync client)
            log.warning("raid button %s pressed on a client without the nubi adapter", self.item.custom_id)
            return
        await handler.on_button(interaction, self.item.custom_id or "")


def raid_buttons(buttons: list[Button]) -> discord.ui.View | None:
    """Core buttons as a persistent view (no timeout): dynamic buttons plus link buttons."""
    if not buttons:
        return None
    view = discord.ui.View(timeout=None)
    for button in buttons[:MAX_BUTTONS]:
        if button.action == "url":
            if button.url:
                view.add_item(discord.ui.Button(label=button.label, style=discord.ButtonStyle.link, url=button.url))
            continue
        style = STYLES.get(button.action, discord.ButtonStyle.secondary)
        view.add_item(RaidButton(discord.ui.Button(label=button.label, style=style, custom_id=button.custom_id)))
    return view
