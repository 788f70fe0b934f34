"""`python -m adapters.mcp [DATABASE_URL]`: the MCP server on stdio, on a database already migrated.

Settings come from config.toml and the environment as for `nubi`; a URL given here overrides the
database. `nubi mcp` does the same from the composition root; this entry needs nothing from bot/.
"""

from __future__ import annotations

import asyncio
import logging
import sys

from core.config import ConfigError, Settings, load_settings
from core.services import build_services

from .transport import run_stdio


def settings_for(argv: list[str]) -> Settings:
    settings = load_settings()
    if not argv:
        return settings
    data = settings.model_dump()
    data["database"]["url"] = argv[0]
    try:
        database = type(settings.database).model_validate(data["database"])
    except ValueError as exc:
        raise ConfigError([f"database.url: {argv[0]!r} is not a sqlite+aiosqlite:// or postgresql+asyncpg:// URL"]) from exc
    return settings.model_copy(update={"database": database})


async def main(settings: Settings) -> None:
    services = build_services(settings)
    try:
        await run_stdio(services)
    finally:
        await services.db.dispose()


if __name__ == "__main__":
    logging.basicConfig(stream=sys.stderr, level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        config = settings_for(sys.argv[1:])
    except ConfigError as err:
        sys.exit("nubi mcp: " + "; ".join(err.problems))
    asyncio.run(main(config))
