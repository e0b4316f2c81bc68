"""Throwaway Postgres and Redis servers on 127.0.0.1 for tests and benchmarks (Debian packages).

`postgres_server(folder)` runs initdb and pg_ctl from Debian's `postgresql` as the `postgres` user
when started as root (both refuse root), with its data under `folder` and a free loopback port;
`redis_server(folder)` runs `redis-server` on a free loopback port with persistence off. Both are
stopped when the block ends.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

from miko_assets.devtools.serving import free_port, stop_process


def _postgres_bin() -> Path:
    """`MIKO_POSTGRES_BIN`, else the newest Debian `postgresql` install."""
    if os.environ.get("MIKO_POSTGRES_BIN"):
        return Path(os.environ["MIKO_POSTGRES_BIN"])
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parts[-3]))
    return found[-1].parent if found else Path("/usr/lib/postgresql/15/bin")


POSTGRES_BIN = _postgres_bin()


@dataclass(frozen=True)
class PostgresServer:
    port: int
    user: str = "postgres"
    host: str = "127.0.0.1"

    def dsn(self, dbname: str) -> str:
        """A libpq connection string (no password: the throwaway cluster trusts loopback)."""
        return f"dbname={dbname} host={self.host} port={self.port} user={self.user}"

    def create_database(self, name: str) -> None:
        subprocess.run([str(POSTGRES_BIN / "createdb"), "-h", self.host, "-p", str(self.port), "-U", self.user, name],
                       check=True, capture_output=True, timeout=60)


@dataclass(frozen=True)
class RedisServer:
    port: int
    host: str = "127.0.0.1"

    def url(self, db: int = 0) -> str:
        return f"redis://{self.host}:{self.port}/{db}"


def _as_postgres_user() -> dict:
    """`preexec_fn`/ownership settings: root hands the cluster to the `postgres` account."""
    if os.getuid() != 0:
        return {}
    account = pwd.getpwnam("postgres")

    def drop() -> None:
        os.setgid(account.pw_gid)
        os.setuid(account.pw_uid)

    return {"preexec_fn": drop}


@contextmanager
def postgres_server(folder: Path, timeout_s: float = 60) -> Iterator[PostgresServer]:
    """A fresh Postgres cluster in `folder` on a free 127.0.0.1 port, trusting local connections."""
    if not (POSTGRES_BIN / "initdb").exists():
        raise FileNotFoundError(f"no Postgres at {POSTGRES_BIN}: apt-get install postgresql (scripts/bootstrap.sh does)")
    folder.mkdir(parents=True, exist_ok=True)
    data, socket_dir = folder / "pgdata", folder / "pgsocket"
    socket_dir.mkdir(exist_ok=True)
    user_kwargs = _as_postgres_user()
    if user_kwargs:
        account = pwd.getpwnam("postgres")
        for path in (folder, socket_dir):
            os.chown(path, account.pw_uid, account.pw_gid)
        # The account must reach the folder through every parent (pytest's temp dirs are 0700).
        for parent in folder.parents:
            if parent == Path("/"):
                break
            mode = parent.stat().st_mode
            if not mode & 0o001:
                os.chmod(parent, mode | 0o001)
    port = free_port()
    made = subprocess.run([str(POSTGRES_BIN / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres", "-E", "UTF8"],
                          capture_output=True, text=True, timeout=120, **user_kwargs)
    if made.returncode != 0:
        raise RuntimeError(f"initdb failed: {made.stderr.strip()[-2000:]}")
    options = f"-c listen_addresses=127.0.0.1 -p {port} -k {socket_dir} -c fsync=off -c max_connections=200"
    log = folder / "postgres.log"
    started = subprocess.run([str(POSTGRES_BIN / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(log), "-w",
                              "-t", str(int(timeout_s)), "start"], capture_output=True, text=True, **user_kwargs)
    if started.returncode != 0:
        raise RuntimeError(f"Postgres did not start: {started.stderr.strip()} {log.read_text()[-2000:] if log.exists() else ''}")
    try:
        yield PostgresServer(port)
    finally:
        stopped = subprocess.run([str(POSTGRES_BIN / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"],
                                 capture_output=True, timeout=60, **user_kwargs)
        if stopped.returncode != 0:
            # pg_ctl, run as `postgres`, cannot reach the folder when another pytest session has
            # made the shared temp root 0700 again meanwhile: stop the postmaster by its pid.
            with suppress(OSError, ValueError, IndexError):
                os.kill(int((data / "postmaster.pid").read_text().split()[0]), signal.SIGQUIT)


@contextmanager
def redis_server(folder: Path, timeout_s: float = 30) -> Iterator[RedisServer]:
    """`redis-server` on a free 127.0.0.1 port, persistence off (no RDB snapshots, no AOF)."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise FileNotFoundError("no redis-server: apt-get install redis-server (scripts/bootstrap.sh does)")
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log = open(folder / "redis.log", "w")
    proc = subprocess.Popen([binary, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no",
                             "--dir", str(folder), "--protected-mode", "yes"], stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            with suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1) as conn:
                conn.sendall(b"PING\r\n")
                if conn.recv(16).startswith(b"+PONG"):
                    break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not start: {(folder / 'redis.log').read_text()[-2000:]}")
            time.sleep(0.1)
        yield RedisServer(port)
    finally:
        stop_process(proc)
        log.close()
