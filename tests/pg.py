"""The state database in tests: a throwaway PostgreSQL cluster and config helpers.

`Cluster` is one PostgreSQL server the test session starts itself (tests/conftest.py's
`pg_cluster` fixture): initdb into a temporary folder (in memory when /dev/shm allows), the
server on a free port on 127.0.0.1 with its unix socket in that folder too, durability off
(fsync, synchronous_commit, full_page_writes) since nothing in it must survive, stopped with
`pg_ctl stop -m immediate` and deleted at the end. Each test gets a database of its own
(`create_database`, empty or a copy of the session's migrated template), dropped after.
`Cluster(bindir, durable=True)` (bench/deliver.py) keeps PostgreSQL's own durability defaults
instead and its folder on disk.

PostgreSQL refuses to run as root: as root the folder belongs to the `postgres` system user and
initdb/pg_ctl run as that user (runuser); otherwise as the current user.
"""

from __future__ import annotations

import dataclasses
import glob
import json
import os
import pwd
import re
import shutil
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

import psycopg

from publisher.config import Config, default_config

from .net import free_port

INSTALL_HINT = "Debian: apt-get install postgresql"
# Settings for a server whose data never needs to survive a crash.
SETTINGS = {
    "listen_addresses": "'127.0.0.1'",
    "max_connections": "200",
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "log_min_messages": "warning",
}
# A server as durable as a production one (PostgreSQL's defaults), for benchmarks.
DURABLE = {"fsync": "on", "synchronous_commit": "on", "full_page_writes": "on"}


def with_database(cfg: Config, url: str) -> Config:
    """`cfg` with `[state] database` set to `url`."""
    return dataclasses.replace(cfg, state=dataclasses.replace(cfg.state, database=url))


def config_for(tmp_path: Path, db_url: str) -> Config:
    """The default config rooted in tmp_path, on the database `db_url`."""
    return with_database(default_config(tmp_path), db_url)


def state_toml(db_url: str) -> str:
    """The `[state]` section of a config.toml naming `db_url`."""
    return f'[state]\ndatabase = "{db_url}"\n'


# The watchdog (see Cluster._watch): argv[1] is JSON [stop command, its subprocess arguments,
# the cluster's folder]. Once stdin closes (the test session has ended, cleanly or not), stop the
# server if it still runs and delete the folder.
WATCHDOG = """
import json, os, shutil, subprocess, sys
stop, as_owner, root = json.loads(sys.argv[1])
sys.stdin.buffer.read()
if os.path.exists(os.path.join(root, "data", "postmaster.pid")):
    subprocess.run(stop, **as_owner, stdin=subprocess.DEVNULL, timeout=60)
shutil.rmtree(root, ignore_errors=True)
"""


def _version_key(bindir: str) -> tuple[int, ...]:
    name = Path(bindir).parent.name  # /usr/lib/postgresql/<version>/bin
    return tuple(int(part) for part in re.findall(r"\d+", name)) or (0,)


def find_bindir() -> Path | None:
    """The folder holding initdb, pg_ctl and postgres: Debian's newest
    /usr/lib/postgresql/*/bin, else `pg_config --bindir`, else the PATH; None if absent."""
    needed = ("initdb", "pg_ctl", "postgres")
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=_version_key, reverse=True)
    if shutil.which("pg_config"):
        try:
            out = subprocess.run(
                ["pg_config", "--bindir"], capture_output=True, text=True, timeout=30
            )
            if out.returncode == 0 and out.stdout.strip():
                candidates.append(out.stdout.strip())
        except (OSError, subprocess.SubprocessError):
            pass
    if shutil.which("initdb"):
        candidates.append(str(Path(shutil.which("initdb")).parent))
    for folder in candidates:
        if all(os.access(Path(folder) / name, os.X_OK) for name in needed):
            return Path(folder)
    return None


def _scratch_parent() -> str | None:
    """/dev/shm when it is a roomy tmpfs (a database is created per test: on some disks that
    costs 0.3 s even with fsync off, in memory 0.02 s), else the usual temporary folder."""
    try:
        st = os.statvfs("/dev/shm")
    except OSError:
        return None
    roomy = st.f_bavail * st.f_frsize >= 2 << 30  # Docker's default 64 MB /dev/shm is not
    return "/dev/shm" if roomy and os.access("/dev/shm", os.W_OK | os.X_OK) else None


class ClusterError(RuntimeError):
    """initdb or the server failed; the message carries their output."""


class Cluster:
    """A throwaway PostgreSQL server. `start()`, then `create_database()` per test."""

    user = "postgres"  # the database superuser (initdb -U), whoever runs the server

    def __init__(self, bindir: Path, *, durable: bool = False) -> None:
        """`durable`: fsync, synchronous_commit and full_page_writes on (`DURABLE`) and the
        folder on disk (the usual temporary folder, never /dev/shm where an fsync costs
        nothing), for timings that mean something; the tests keep the default."""
        self.bindir = bindir
        self.settings = {**SETTINGS, **DURABLE} if durable else dict(SETTINGS)
        self.as_root = os.geteuid() == 0
        if self.as_root:
            try:
                self.owner = pwd.getpwnam("postgres")
            except KeyError:
                raise ClusterError(
                    "running as root, and PostgreSQL refuses to: no 'postgres' system user to "
                    f"run it as ({INSTALL_HINT} creates it)"
                ) from None
        parent = None if durable else _scratch_parent()
        self.root = Path(tempfile.mkdtemp(prefix="publisher-tests-pg-", dir=parent))
        self.data = self.root / "data"
        self.socket_dir = self.root / "sock"
        self.log = self.root / "server.log"
        self.port = 0
        self._admin: psycopg.Connection[Any] | None = None
        self._watchdog: subprocess.Popen[bytes] | None = None
        self._started = False

    # -- running the server's programs -----------------------------------------------------

    def _command(self, *args: str | Path) -> tuple[list[str], dict[str, Any]]:
        """argv and subprocess arguments running `args` as the cluster's owner."""
        cmd = [str(a) for a in args]
        if not self.as_root:
            return cmd, {}
        runuser = shutil.which("runuser", path=f"{os.environ.get('PATH', '')}:/usr/sbin:/sbin")
        if runuser:
            return [runuser, "-u", "postgres", "--", *cmd], {}
        # No util-linux: switch user in the child ourselves.
        return cmd, {"user": "postgres", "group": self.owner.pw_gid, "extra_groups": []}

    def _run(self, *args: str | Path, timeout: float = 120) -> None:
        cmd, as_owner = self._command(*args)
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env.setdefault("LC_ALL", "C")
        out = subprocess.run(
            cmd,
            **as_owner,
            cwd=self.root,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if out.returncode != 0:
            log = self.log.read_text(errors="replace")[-4000:] if self.log.exists() else ""
            raise ClusterError(
                f"{' '.join(cmd)} exited {out.returncode}:\n{out.stdout}{out.stderr}"
                + (f"\nserver log ({self.log}):\n{log}" if log else "")
            )

    def start(self) -> None:
        self.socket_dir.mkdir()
        if self.as_root:
            for path in (self.root, self.socket_dir):
                os.chown(path, self.owner.pw_uid, self.owner.pw_gid)
        initdb = self.bindir / "initdb"
        self._run(
            *(initdb, "-D", self.data, "-U", self.user, "-A", "trust"),
            *("-E", "UTF8", "--locale=C", "--no-sync"),
        )
        settings = {**self.settings, "unix_socket_directories": f"'{self.socket_dir}'"}
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.write("\n# publisher tests\n")
            conf.writelines(f"{k} = {v}\n" for k, v in settings.items())
        self._watch()
        # The port is free when chosen but not reserved: another process may take it first.
        for attempt in range(3):
            self.port = free_port()
            try:
                self._run(
                    *(self.bindir / "pg_ctl", "start", "-w", "-t", "60", "-D", self.data),
                    *("-l", self.log, "-o", f"-p {self.port}"),
                )
                break
            except ClusterError:
                if attempt == 2:
                    raise
        self._started = True
        self._admin = psycopg.connect(
            host="127.0.0.1", port=self.port, user=self.user, dbname="postgres", autocommit=True
        )

    def _watch(self) -> None:
        """Start the watchdog: a process that outlives this one if it is killed (kill -9, a
        timeout's SIGTERM, a second Ctrl-C: no fixture teardown then) to stop the server and
        delete the folder, rather than leave a server running. It waits for its stdin to close,
        which happens when this process exits, however it exits."""
        stop, as_owner = self._command(
            self.bindir / "pg_ctl", "stop", "-D", self.data, "-m", "immediate", "-w"
        )
        self._watchdog = subprocess.Popen(
            [sys.executable, "-c", WATCHDOG, json.dumps([stop, as_owner, str(self.root)])],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            cwd=self.root,
            start_new_session=True,  # not in our process group: signals to it miss the watchdog
        )

    def stop(self) -> None:
        """Stop the server (immediate: nothing to keep) and delete its folder."""
        try:
            if self._admin is not None:
                self._admin.close()
                self._admin = None
            if self._started:
                self._started = False
                self._run(self.bindir / "pg_ctl", "stop", "-D", self.data, "-m", "immediate", "-w")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)
            if self._watchdog is not None:
                self._watchdog.stdin.close()  # type: ignore[union-attr]  # nothing left to do
                self._watchdog.wait(30)
                self._watchdog = None

    # -- databases --------------------------------------------------------------------------

    def url(self, dbname: str) -> str:
        return f"postgresql+psycopg://{self.user}@127.0.0.1:{self.port}/{dbname}"

    def create_database(self, template: str | None = None) -> str:
        """A new database, empty (no tables: the library creates its own) or a copy of the
        database `template` (which nobody may be connected to); returns its name."""
        assert self._admin is not None, "the cluster is not started"
        name = f"t_{uuid.uuid4().hex}"
        copy = f' TEMPLATE "{template}"' if template else ""
        self._admin.execute(f'CREATE DATABASE "{name}"{copy}')
        return name

    def drop_database(self, name: str) -> None:
        """Drop it, disconnecting whatever a test left connected."""
        assert self._admin is not None, "the cluster is not started"
        self._admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
