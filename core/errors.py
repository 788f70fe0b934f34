"""Typed domain errors. Adapters map them to a friendly chat reply or the documented HTTP error."""

from __future__ import annotations


class NubiError(Exception):
    """Base of every error a member or client can cause. `code` is stable; the message is for people."""

    code = "VALIDATION_ERROR"

    def __init__(self, message: str, *, details: dict | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or {}


class ValidationError(NubiError):
    code = "VALIDATION_ERROR"

    def __init__(self, message: str, *, field: str | None = None, details: dict | None = None) -> None:
        details = dict(details or {})
        if field:
            details.setdefault("field", field)
        super().__init__(message, details=details)
        self.field = field


class NotFound(NubiError):
    code = "NOT_FOUND"


class SessionNotFound(NotFound):
    code = "SESSION_NOT_FOUND"


class AgentNotFound(NotFound):
    code = "AGENT_NOT_FOUND"


class SessionExpired(NubiError):
    code = "SESSION_EXPIRED"


class SessionRenewalFailed(NubiError):
    code = "SESSION_RENEWAL_FAILED"


class RaidNotFound(NotFound):
    code = "RAID_NOT_FOUND"


class NoActiveRaid(NotFound):
    code = "NO_ACTIVE_RAID"


class RaidEnded(NubiError):
    code = "RAID_ENDED"


class RaidFull(NubiError):
    code = "RAID_FULL"


class RaidAlreadyActive(NubiError):
    code = "RAID_ALREADY_ACTIVE"


class NotParticipant(NubiError):
    code = "NOT_PARTICIPANT"


class AlreadyClaimed(NubiError):
    code = "ALREADY_CLAIMED"


class UnknownObjective(NubiError):
    code = "UNKNOWN_OBJECTIVE"


class Banned(NubiError):
    code = "BANNED"


class PermissionDenied(NubiError):
    code = "FORBIDDEN"


class Unauthorized(NubiError):
    """No valid credential was presented (an API key, or a session token)."""

    code = "UNAUTHORIZED"


class Conflict(NubiError):
    code = "CONFLICT"


class RateLimited(NubiError):
    code = "RATE_LIMIT_EXCEEDED"


class Unavailable(NubiError):
    """The database could not be reached; the member should try again shortly."""

    code = "SERVICE_UNAVAILABLE"
