"""A community's own settings over REST: read them, and change several keys at once (audited).

The keys, their validation and the audit entry are core's (core/community_settings.py), the same as
`/settings` in chat; this module only maps HTTP onto it. A refused value answers 400 with the key in
`error.details.field`, and nothing is written.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from pydantic import Field

from core.services import Services

from .schemas import Body, DbId, Model
from .security import authorize_community

router = APIRouter()
COMMUNITIES = "communities"
SettingValue = bool | int | str | list[str] | None


class SettingsOut(Model):
    community_id: int
    settings: dict[str, Any] = Field(description="The keys this community set itself (dotted names)")
    effective: dict[str, Any] = Field(description="Every key as this community's raids use it")


class SettingsPatch(Body):
    settings: dict[str, SettingValue] = Field(
        min_length=1, max_length=64,
        description='Dotted keys to set, e.g. {"verification": "review", "objectives.like.points": 3}; '
                    "null resets a key to the global default. All are applied, or none.",
    )


def _svc(request: Request) -> Services:
    return request.app.state.services  # type: ignore[no-any-return]


@router.get("/api/communities/{community_id}/settings", response_model=SettingsOut, tags=[COMMUNITIES],
            summary="A community's settings: its own keys and the effective values")
async def get_settings(request: Request, community_id: DbId) -> dict[str, Any]:
    await authorize_community(request, community_id)
    return await _svc(request).community_settings.show(community_id)


@router.patch("/api/communities/{community_id}/settings", response_model=SettingsOut, tags=[COMMUNITIES],
              summary="Change a community's settings (validated like the config file, audited)")
async def patch_settings(request: Request, community_id: DbId, body: SettingsPatch) -> dict[str, Any]:
    await authorize_community(request, community_id)
    return await _svc(request).community_settings.change(community_id, body.settings, actor=None)
