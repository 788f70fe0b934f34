"""A throwaway PostgreSQL cluster on a free loopback port, for the tests and benchmarks.

Uses initdb/pg_ctl from PATH or the Debian location. PostgreSQL refuses to run as root, so as
root the cluster runs as the unprivileged `nobody` user.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass


def _bin(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return candidates[-1] if candidates else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Cluster:
    dir: str
    port: int
    pg_ctl: str
    as_user: list[str]

    @property
    def url(self) -> str:
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/postgres"

    def url_for(self, database: str) -> str:
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/{database}"

    def _ctl(self, *args: str) -> None:
        subprocess.run([*self.as_user, self.pg_ctl, *args], check=True, capture_output=True, timeout=120)

    def stop(self, mode: str = "fast") -> None:
        subprocess.run([*self.as_user, self.pg_ctl, "-D", f"{self.dir}/data", "-m", mode, "stop"],
                       capture_output=True, timeout=120)

    def start(self) -> None:
        self._ctl("-D", f"{self.dir}/data", "-l", f"{self.dir}/log", "-w", "-t", "60",
                  "-o", f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1", "start")

    def destroy(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.dir, ignore_errors=True)


def missing_reason() -> str | None:
    if not _bin("initdb") or not _bin("pg_ctl"):
        return "PostgreSQL server binaries (initdb, pg_ctl) are not installed"
    return None


def start_cluster() -> Cluster:
    initdb, pg_ctl = _bin("initdb"), _bin("pg_ctl")
    if not initdb or not pg_ctl:
        raise RuntimeError(missing_reason() or "no PostgreSQL")
    base = tempfile.mkdtemp(prefix="nubi-pg-")
    as_user: list[str] = []
    if os.geteuid() == 0:
        os.chmod(base, 0o777)
        shutil.chown(base, "nobody")
        as_user = ["runuser", "-u", "nobody", "--"]
    subprocess.run(
        [*as_user, initdb, "-D", f"{base}/data", "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"],
        check=True, capture_output=True, timeout=180,
    )
    with open(f"{base}/data/postgresql.conf", "a") as conf:
        conf.write("\nfsync = off\nsynchronous_commit = off\nfull_page_writes = off\nmax_connections = 300\n")
    cluster = Cluster(base, free_port(), pg_ctl, as_user)
    cluster.start()
    return cluster
