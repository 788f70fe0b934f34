"""`python -m bot.migrator`: bring the database whose URL comes on stdin to the newest migration.

`nubi run` starts it in a child process when its database is behind (bot/preflight.py,
`migrate_async`), so Alembic never loads into the server. Exit 0, or 1 with the one-line reason
`migrate` gives as the last line on stderr.
"""

from __future__ import annotations

import signal
import sys

from .preflight import StartupError, migrate


def main() -> int:
    # Ctrl-C reaches the whole process group; the server stops once the migration is done, as it
    # did when it migrated in process: a migration is not cut short halfway.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    url = sys.stdin.read().strip()
    try:
        migrate(url)
    except StartupError as exc:
        print(exc, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
