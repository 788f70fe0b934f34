"""Raid targets: https only; X/Twitter status links normalized to https://x.com/<user>/status/<id>."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from core.errors import ValidationError
from core.i18n import _

X_HOSTS = {"x.com", "www.x.com", "twitter.com", "www.twitter.com", "mobile.twitter.com", "mobile.x.com"}
_STATUS = re.compile(r"^/([A-Za-z0-9_]{1,15})/status(?:es)?/(\d{1,25})(?:/.*)?$")
_HANDLE = re.compile(r"^[A-Za-z0-9_]{1,15}$")


def normalize_target(url: str) -> str:
    url = (url or "").strip()
    if not url:
        raise ValidationError(_("a raid needs a target URL"), field="target")
    if len(url) > 512:
        raise ValidationError(_("the target URL is too long (512 characters at most)"), field="target")
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise ValidationError(_("not a valid URL: {url}").format(url=url), field="target") from exc
    if parts.scheme.lower() != "https" or not parts.hostname:
        raise ValidationError(_("the target must be an https:// URL"), field="target")
    host = parts.hostname.lower()
    if host in X_HOSTS:
        m = _STATUS.match(parts.path)
        if not m:
            raise ValidationError(
                _("an X link must point to a post, like https://x.com/user/status/123"), field="target"
            )
        return f"https://x.com/{m.group(1)}/status/{m.group(2)}"
    return url


def x_status_id(url: str) -> str | None:
    """The post id of a normalized X target, or None for other targets."""
    m = re.match(r"^https://x\.com/[A-Za-z0-9_]{1,15}/status/(\d+)$", url)
    return m.group(1) if m else None


def parse_status_url(url: str) -> tuple[str, str] | None:
    """(handle, id) for any X status URL, or None."""
    try:
        normal = normalize_target(url)
    except ValidationError:
        return None
    m = re.match(r"^https://x\.com/([A-Za-z0-9_]{1,15})/status/(\d+)$", normal)
    return (m.group(1), m.group(2)) if m else None


def normalize_handle(handle: str) -> str:
    h = (handle or "").strip()
    if h.startswith("https://"):
        parts = urlsplit(h)
        if (parts.hostname or "").lower() in X_HOSTS:
            h = parts.path.strip("/").split("/")[0]
    h = h.lstrip("@")
    if not _HANDLE.match(h):
        raise ValidationError(
            _("an X handle is 1 to 15 letters, digits or underscores, like @nubi_bot"), field="handle"
        )
    return h.lower()
