"""APScheduler as an alarm clock only: every job calls an idempotent core service.

The rows are the truth. On start we reconcile (end overdue raids, lift overdue locks, expire
sessions, close windows, post a missed announcement slot), then arm one date job per active raid
and one cron job per announcement schedule. A periodic sweep repeats the reconciliation, so a job
lost to a crash or fired in two processes still has exactly one effect.
"""

from __future__ import annotations

import logging
from datetime import datetime

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.date import DateTrigger
from apscheduler.triggers.interval import IntervalTrigger

from core.errors import NubiError
from core.events import RaidStarted
from core.schedules import next_slot
from core.services import Services
from core.verification.window import close_verification_windows

log = logging.getLogger(__name__)


class NubiScheduler:
    def __init__(self, services: Services) -> None:
        self.services = services
        self.settings = services.settings
        self.scheduler = AsyncIOScheduler(
            timezone="UTC", job_defaults={"misfire_grace_time": None, "coalesce": True, "max_instances": 1}
        )
        self._schedule_jobs: dict[int, str] = {}
        services.bus.subscribe(RaidStarted, self._on_raid_started)

    async def start(self) -> None:
        await self.reconcile()
        for raid_id, ends_at in await self.services.raids.active_deadlines():
            self.arm_raid_end(raid_id, ends_at)
        await self.sync_schedules()
        s = self.settings
        self.scheduler.add_job(self.sweep, IntervalTrigger(seconds=s.scheduler.sweep_interval_seconds), id="sweep")
        self.scheduler.add_job(
            self.snapshot_active, IntervalTrigger(seconds=s.raids.metrics_interval_seconds), id="metrics"
        )
        self.scheduler.add_job(
            self.sessions_sweep, IntervalTrigger(minutes=s.sessions.cleanup_interval_minutes), id="sessions"
        )
        if s.x.bearer_token is not None:
            self.scheduler.add_job(
                self.x_sweeps, IntervalTrigger(seconds=s.scheduler.sweep_interval_seconds), id="x-sweeps"
            )
        self.scheduler.start()

    async def stop(self) -> None:
        self.services.bus.unsubscribe(RaidStarted, self._on_raid_started)
        if self.scheduler.running:
            self.scheduler.shutdown(wait=False)

    # -- jobs ------------------------------------------------------------------------------------

    async def reconcile(self) -> dict[str, int]:
        """Bring the rows up to now: each step is idempotent and claims its work in the database."""
        svc = self.services
        done = {
            "raids_ended": len(await _safe(svc.raids.end_overdue(), [])),
            "locks_released": len(await _safe(svc.locks.release_overdue(), [])),
            "lock_releases_retried": len(await _safe(svc.locks.retry_releases(), [])),
            "sessions_expired": (await _safe(svc.sessions.sweep(), {"expired": 0}))["expired"],
            "windows_closed": await _safe(svc.boards.close_windows(), 0),
            "claims_unsettled": await _safe(close_verification_windows(svc), 0),
            "announcements": await _safe(svc.schedules.run_due(), 0),
        }
        if any(done.values()):
            log.info("reconciled: %s", done)
        return done

    async def sweep(self) -> None:
        await self.reconcile()
        await self.sync_schedules()
        await self.republish_unposted()

    async def republish_unposted(self) -> None:
        """Posts another process could not make (no adapter there, or it died): adapters claim them."""
        for due in await _safe(self.services.outbox.due(), []):
            await self.services.bus.publish(due)

    async def x_sweeps(self) -> None:
        """X-API verification sweeps that are due; the database decides which, and leases each raid."""
        from adapters.x.verifier import run_due

        await _safe(run_due(self.services), [])

    async def sessions_sweep(self) -> None:
        await _safe(self.services.sessions.sweep(), None)

    async def snapshot_active(self) -> None:
        for raid_id, _ in await _safe(self.services.raids.active_deadlines(), []):
            await _safe(self.services.raids.snapshot(raid_id), False)

    async def end_raid(self, raid_id: int) -> None:
        await _safe(self.services.raids.end(raid_id, reason="time is up", cause="time_up"), False)

    async def fire_schedule(self, schedule_id: int, slot: datetime) -> None:
        await _safe(self.services.schedules.fire(schedule_id, slot), False)
        self._schedule_jobs.pop(schedule_id, None)
        await self.sync_schedules()  # arms the next slot

    # -- arming ------------------------------------------------------------------------------------

    def arm_raid_end(self, raid_id: int, ends_at: datetime) -> None:
        self.scheduler.add_job(
            self.end_raid, DateTrigger(run_date=ends_at), args=[raid_id], id=f"raid-end:{raid_id}",
            replace_existing=True,
        )

    async def _on_raid_started(self, event: RaidStarted) -> None:
        progress = await self.services.raids.progress(event.raid_id, top=0)
        self.arm_raid_end(event.raid_id, progress.ends_at)

    async def sync_schedules(self) -> None:
        current = {s.id: s for s in await _safe(self.services.schedules.list(), [])}
        for sid in list(self._schedule_jobs):
            if sid not in current:
                job_id = self._schedule_jobs.pop(sid)
                if self.scheduler.get_job(job_id):
                    self.scheduler.remove_job(job_id)
        for sid, sched in current.items():
            if sid in self._schedule_jobs:
                continue
            # croniter, not CronTrigger: APScheduler counts weekdays from Monday, crontab from Sunday.
            slot = next_slot(sched.cron, sched.timezone, self.services.clock.now())
            job_id = f"schedule:{sid}"
            self.scheduler.add_job(
                self.fire_schedule, DateTrigger(run_date=slot), args=[sid, slot], id=job_id, replace_existing=True
            )
            self._schedule_jobs[sid] = job_id


async def _safe(coro, default):  # type: ignore[no-untyped-def]
    """A job must never kill the scheduler: log and carry on (the next sweep retries)."""
    try:
        return await coro
    except NubiError as exc:
        log.warning("scheduled work refused: %s", exc.message)
    except Exception:
        log.exception("scheduled work failed; the next sweep will retry")
    return default
