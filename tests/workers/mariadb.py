"""A private MariaDB server for the catalog tests: the Debian package's own `mariadbd` (make tools
installs mariadb-server), on a datadir of its own and a free 127.0.0.1 port, never the system's
server. Started once per test session, stopped at its end; each test gets a database of its own.

    server = MariaDb.start(directory)    mariadb-install-db, then mariadbd, then a user for TCP
    server.database("t_1234")           CREATE DATABASE, and the URL the catalog is given
    server.stop()

The server keeps its defaults (latin1, REPEATABLE READ, whole-second DATETIME), as a site's
would: what the catalog needs (utf8mb4, READ COMMITTED, microseconds) it must ask for itself.
Only durability is relaxed (commits are not flushed), which no test can see.

Measured on the 2-core test machine: mariadb-install-db 4.6 s, mariadbd ready in 0.4 s.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pymysql

#: The user the catalog connects as over TCP (root stays on the socket, for the fixture).
USER, PASSWORD = "introspect", "secret"
START_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0


class MariaDbError(RuntimeError):
    """The private server could not be made or started; the message ends with its log."""


def _tool(name: str) -> str:
    found = shutil.which(name) or next(
        (str(path) for path in (Path("/usr/sbin") / name, Path("/usr/bin") / name) if path.exists()), None
    )
    if found is None:
        raise MariaDbError(f"{name} is missing: `make tools` installs the mariadb-server package")
    return found


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass
class MariaDb:
    directory: Path
    port: int
    process: subprocess.Popen[bytes]

    @property
    def socket(self) -> Path:
        return self.directory / "mariadb.sock"

    @property
    def log(self) -> Path:
        return self.directory / "mariadb.log"

    def url(self, database: str) -> str:
        return f"mariadb+pymysql://{USER}:{PASSWORD}@127.0.0.1:{self.port}/{database}"

    def root(self) -> pymysql.Connection:  # type: ignore[type-arg]
        return pymysql.connect(unix_socket=str(self.socket), user="root", autocommit=True)

    def execute(self, *statements: str) -> None:
        connection = self.root()
        try:
            with connection.cursor() as cursor:
                for statement in statements:
                    cursor.execute(statement)
        finally:
            connection.close()

    def database(self, name: str) -> str:
        """A new, empty database (the server's default character set: the catalog's tables say
        their own); its URL."""
        self.execute(f"CREATE DATABASE `{name}`")
        return self.url(name)

    def drop(self, name: str) -> None:
        self.execute(f"DROP DATABASE IF EXISTS `{name}`")

    @classmethod
    def start(cls, directory: Path) -> MariaDb:
        datadir = directory / "data"
        as_root = ["--user=root"] if os.geteuid() == 0 else []  # mariadbd refuses root otherwise
        install = subprocess.run(
            [
                _tool("mariadb-install-db"), "--no-defaults", f"--datadir={datadir}",
                "--auth-root-authentication-method=normal", "--skip-test-db", *as_root,
            ],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        if install.returncode != 0:
            raise MariaDbError(f"mariadb-install-db failed ({install.returncode}):\n{install.stderr[-3000:]}")
        port = _free_port()
        sock, log = directory / "mariadb.sock", directory / "mariadb.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                [
                    _tool("mariadbd"), "--no-defaults", f"--datadir={datadir}", f"--socket={sock}",
                    f"--port={port}", "--bind-address=127.0.0.1", f"--pid-file={directory / 'mariadb.pid'}",
                    f"--log-error={log}", "--skip-name-resolve", "--innodb-buffer-pool-size=64M",
                    # a test server: a commit need not reach the disk (DDL of each test's database
                    # costs a quarter less); nothing the catalog sees changes
                    "--innodb-flush-log-at-trx-commit=0", "--innodb-doublewrite=0", *as_root,
                ],
                stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        server = cls(directory, port, process)
        server._wait_ready()
        server.execute(
            f"CREATE USER '{USER}'@'127.0.0.1' IDENTIFIED BY '{PASSWORD}'",
            f"GRANT ALL PRIVILEGES ON *.* TO '{USER}'@'127.0.0.1'",
        )
        return server

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                break
            with socket.socket(socket.AF_UNIX) as probe:  # (a failed pymysql.connect leaks its socket)
                try:
                    probe.connect(str(self.socket))
                except OSError:
                    time.sleep(0.05)
                    continue
            self.root().close()
            return
        self.stop()
        raise MariaDbError(f"mariadbd did not start:\n{self.log.read_text(errors='replace')[-3000:]}")

    def stop(self) -> None:
        """SIGTERM (a clean shutdown), SIGKILL past STOP_TIMEOUT."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
