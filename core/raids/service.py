"""Raids: start, join, claim, review, end exactly once, progress, snapshots and reports.

`RaidService` is the one object callers hold; each use case lives in its own module under
`core/raids/` (start, membership, review, ending, metrics) and the service puts them together.
Each write is one transaction handed to `Database.write`; events go out only after it committed.
The max-participants cap and the single end are enforced by conditional UPDATEs in the database,
so they hold under concurrency and across processes.
"""

from __future__ import annotations

from .common import MAX_DURATION, MIN_DURATION, community_raid_settings
from .review import ReviewMixin
from .start import StartMixin


class RaidService(StartMixin, ReviewMixin):
    """Every raid use case behind one facade (state set up in `RaidsBase.__init__`)."""


__all__ = ["MAX_DURATION", "MIN_DURATION", "RaidService", "community_raid_settings"]
