"""Which community a transaction works for, handed to PostgreSQL's row-level security.

Code that acts for one community (a request made with a community-scoped API key) runs inside
`community_scope(id)`. With `database.row_level_security` on, `Database` calls `apply` at the start
of every transaction: it sets `nubi.community` for that transaction only (SET LOCAL semantics, so a
pooled connection never carries it into the next one), and the policies of migration 0003 hide every
other community's rows even from a query that forgot its WHERE clause. Outside a scope the setting
stays unset and every row is visible: the scheduler, admin keys and chat adapters do global work.

Policies bind neither superusers, roles with BYPASSRLS, nor the tables' owner: an app connected as
one of those would look protected and not be, so `apply` refuses such a connection.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

current_community: ContextVar[int | None] = ContextVar("nubi_current_community", default=None)

_CHECKED = "nubi_rls_checked"  # key in a pooled connection's info: its role was verified once

_ROLE_CHECK = text(
    """
    SELECT r.rolname, r.rolsuper, r.rolbypassrls,
           coalesce(pg_has_role(current_user, c.relowner, 'USAGE'), false) AS owner,
           coalesce(c.relrowsecurity, false) AS enabled
    FROM pg_roles r
    LEFT JOIN pg_class c ON c.oid = to_regclass('raid_sessions')
    WHERE r.rolname = current_user
    """
)


class RowSecurityBypassed(RuntimeError):
    """row_level_security is on, but the connected role is exempt from the policies (a setup error)."""


@contextmanager
def community_scope(community_id: int | None) -> Iterator[None]:
    """Run the enclosed code (and the tasks it starts) for one community; None means global work."""
    token = current_community.set(community_id)
    try:
        yield
    finally:
        current_community.reset(token)


async def apply(conn: AsyncConnection) -> None:
    """Call right after a transaction begins on PostgreSQL with row-level security on."""
    if not conn.info.get(_CHECKED):
        await _refuse_exempt_role(conn)
        conn.info[_CHECKED] = True
    community = current_community.get()
    if community is not None:
        await conn.execute(
            text("SELECT set_config('nubi.community', :id, true)"), {"id": str(int(community))}
        )


async def _refuse_exempt_role(conn: AsyncConnection) -> None:
    row = (await conn.execute(_ROLE_CHECK)).one()
    why = (
        "is a superuser" if row.rolsuper
        else "has BYPASSRLS" if row.rolbypassrls
        else "owns the tables" if row.owner
        else "sees tables without row-level security (run `nubi migrate` as the owner)" if not row.enabled
        else None
    )
    if why:
        raise RowSecurityBypassed(
            f"database.row_level_security is on, but the database role {row.rolname!r} {why}, so the policies "
            "would not apply: connect as a login role in nubi_app (see docs/rls.md)"
        )
