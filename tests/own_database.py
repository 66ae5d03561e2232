"""A database of a test's own, to stop, kill or restart without touching the shared one.

Fault tests (a stalled FerretDB, a database restart mid-stream) must never pause or restart the
FerretDB on 27017, its PostgreSQL or RabbitMQ: other suites run on them at the same time. So they
start their own: :class:`OwnFerretDB` is the project's FerretDB binary (``infra.sh`` builds it) on a
free port, over the shared PostgreSQL or over an :class:`OwnPostgres`, a cluster of Debian's
PostgreSQL initialised into a temporary folder with ``infra.sh``'s settings (about 2 s on this
machine). Each can be killed and started again on the same port, so a client keeps its URL.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.support import free_port

# deploy/local/infra.sh pg_up's server settings
PG_SETTINGS = ("-c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off "
               "-c plan_cache_mode=force_custom_plan -c cpu_operator_cost=0.05 -c random_page_cost=1.1")


def ferretdb_binary() -> Path:
    tools = Path(os.environ.get("SEN_TOOLS_DIR") or Path.home() / ".local/share/sen/bin")
    binary = tools / "ferretdb"
    assert binary.is_file(), f"{binary} is missing: `bash deploy/local/infra.sh up` builds it"
    return binary


def pg_bin() -> Path:
    for d in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (d / "pg_ctl").is_file():
            return d
    raise AssertionError("Debian's PostgreSQL is missing: `bash deploy/local/infra.sh up` installs it")


def wait_listening(port: int, seconds: float, proc: subprocess.Popen | None = None, log: Path | None = None) -> None:
    deadline = time.monotonic() + seconds
    while True:
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"exited {proc.returncode}: {log.read_text()[-2000:] if log else ''}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            assert time.monotonic() < deadline, f"nothing listens on 127.0.0.1:{port} after {seconds} s"
            time.sleep(0.05)


class OwnPostgres:
    """A PostgreSQL cluster in ``folder`` on a free port, as ``infra.sh`` runs the shared one."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.data = folder / "pg"
        self.log = folder / "postgresql.log"
        self.port = free_port()
        self.bin = pg_bin()

    def _run(self, *args: str) -> None:
        cmd = [str(self.bin / args[0]), *args[1:]]
        if os.getuid() == 0:  # PostgreSQL refuses to run as root: as its own user, as infra.sh does
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        subprocess.run(cmd, check=True, capture_output=True, cwd="/", timeout=60)

    def init(self) -> None:
        if os.getuid() == 0:
            shutil.chown(self.folder, "postgres", "postgres")
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8",
                  "--locale=C.UTF-8", "--no-sync")
        self.start()
        self._run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "ferretdb")

    def start(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60",
                  "-o", f"-p {self.port} -k {self.folder} {PG_SETTINGS}", "start")

    def stop(self, mode: str = "fast") -> None:
        """``fast``: clients disconnected, a clean shutdown; ``immediate``: as a crash."""
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop")

    def restart(self, down: float = 0.0) -> None:
        """A fast shutdown, ``down`` seconds without a server, and a start."""
        self.stop("fast")
        time.sleep(down)
        self.start()

    @property
    def url(self) -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/ferretdb"


class OwnFerretDB:
    """The project's FerretDB on a free port over the PostgreSQL at ``pg_url``."""

    def __init__(self, folder: Path, pg_url: str) -> None:
        self.folder = folder
        self.pg_url = pg_url
        self.port, self.debug_port = free_port(), free_port()
        self.log = folder / "ferretdb.log"
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"mongodb://127.0.0.1:{self.port}/"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> None:
        assert self.proc is None or self.proc.poll() is not None, "already running"
        (self.folder / "state").mkdir(exist_ok=True)
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [str(ferretdb_binary()), "--handler=postgresql", f"--postgresql-url={self.pg_url}",
                 f"--state-dir={self.folder / 'state'}", f"--listen-addr=127.0.0.1:{self.port}",
                 f"--debug-addr=127.0.0.1:{self.debug_port}", "--telemetry=disable", "--log-level=warn"],
                stdout=out, stderr=subprocess.STDOUT)
        wait_listening(self.port, 30, self.proc, self.log)

    def kill(self) -> None:
        """SIGKILL: gone at once, as after a crash or an OOM kill."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGCONT)  # a stopped process dies only once continued
            self.proc.kill()
            self.proc.wait(10)

    def restart(self, down: float = 0.0) -> None:
        """Killed, ``down`` seconds without a server, started again on the same port."""
        self.kill()
        time.sleep(down)
        self.start()

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.kill(self.proc.pid, signal.SIGCONT)  # never leave it stopped
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def _folder() -> Path:
    # not pytest's tmp_path: PostgreSQL runs as its own user, which must reach its folder
    folder = Path(tempfile.mkdtemp(prefix="sen-own-db-"))
    folder.chmod(0o755)
    return folder


@contextmanager
def own_postgres() -> Iterator[OwnPostgres]:
    """A PostgreSQL cluster of the caller's own, removed afterwards."""
    folder = _folder()
    pg = OwnPostgres(folder)
    try:
        pg.init()
        yield pg
    finally:
        try:
            pg.stop("immediate")
        except subprocess.CalledProcessError:
            pass  # not running
        shutil.rmtree(folder, ignore_errors=True)


@contextmanager
def own_ferretdb(pg_url: str | None = None) -> Iterator[OwnFerretDB]:
    """A FerretDB of the caller's own over ``pg_url`` (default: the shared PostgreSQL's ``ferretdb``
    database, whose databases the caller must then drop itself); stopped afterwards."""
    folder = _folder()
    url = pg_url or f"postgres://postgres@127.0.0.1:{os.environ.get('SEN_PG_PORT', '54329')}/ferretdb"
    db = OwnFerretDB(folder, url)
    try:
        db.start()
        yield db
    finally:
        db.stop()
        shutil.rmtree(folder, ignore_errors=True)
