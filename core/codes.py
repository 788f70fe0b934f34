"""One-time codes a member or moderator carries from one chat to another (`/link account`,
`/community link`): short, random, case- and dash-insensitive, stored only as a hash, valid for
`CODE_TTL` and used once (each feature redeems them with one conditional UPDATE).
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from core.errors import ValidationError
from core.i18n import _

CODE_TTL = timedelta(minutes=10)
ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"  # no 0/O, 1/I: read aloud and typed without doubt
CODE_LENGTH = 8
_CODE = re.compile(f"[{ALPHABET}]{{{CODE_LENGTH}}}")


@dataclass(frozen=True)
class Issued:
    code: str  # shown as XXXX-XXXX
    expires_at: datetime


def new_code() -> str:
    return "".join(secrets.choice(ALPHABET) for _i in range(CODE_LENGTH))


def normalize(code: str) -> str | None:
    """The code as stored, or None if it cannot be one: case, spaces and dashes do not matter."""
    c = re.sub(r"[\s-]", "", code or "").upper()
    return c if _CODE.fullmatch(c) else None


def parsed(code: str) -> str:
    """`normalize(code)`, or a ValidationError a member can act on when it is not code-shaped."""
    norm = normalize(code)
    if norm is None:
        raise ValidationError(_("That is not a link code: a code has 8 letters and digits, like K7QF-M2XA."),
                              field="code")
    return norm


def shown(code: str) -> str:
    return f"{code[:4]}-{code[4:]}"


def code_hash(code: str) -> str:
    return hashlib.sha256(code.encode()).hexdigest()
