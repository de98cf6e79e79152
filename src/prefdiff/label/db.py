"""Database engine, SQLite durability settings, sessions and Alembic migrations.

Durability (a vote acknowledged to a rater is never lost): every write is committed before the
HTTP response is sent. On SQLite we use WAL with `synchronous=FULL`: the WAL is fsync'ed at
every commit, so a committed vote survives a SIGKILL of the server *and* a power cut or kernel
crash. (`NORMAL` would survive a SIGKILL — the WAL pages sit in the OS page cache — but not a
power cut, since WAL mode with NORMAL syncs only at checkpoints.) On PostgreSQL the default
`synchronous_commit=on` gives the same guarantee.

Concurrency on SQLite: write transactions start with `BEGIN IMMEDIATE`, so a transaction that
reads and then writes takes the write lock up front and waits (busy_timeout) instead of failing
with "database is locked" when it tries to upgrade. Read-only sessions use a deferred `BEGIN`
and, thanks to WAL, never block writers.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, inspect
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from prefdiff.label.errors import StudyError

DEFAULT_DB = "sqlite:///prefdiff-label.db"
MIGRATIONS_DIR = Path(__file__).parent / "migrations"
_SQLITE_BUSY_TIMEOUT_MS = 30_000


def normalize_url(db: str) -> str:
    """Accept a SQLAlchemy URL or a bare file path (taken as SQLite)."""
    if "://" in db:
        return db
    return f"sqlite:///{Path(db).expanduser().resolve()}"


def is_sqlite(engine: Engine) -> bool:
    """Whether `engine` talks to SQLite."""
    return engine.dialect.name == "sqlite"


def make_engine(db: str, *, pool_size: int = 20, max_overflow: int = 30) -> Engine:
    """An engine for `db` with the label app's settings (see the module docstring)."""
    url = make_url(normalize_url(db))
    if url.get_backend_name() == "sqlite":
        database = url.database or ""
        if database in ("", ":memory:"):
            raise StudyError(f"the label app needs a SQLite file, not an in-memory database: {db}")
        Path(database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            url,
            connect_args={"timeout": _SQLITE_BUSY_TIMEOUT_MS / 1000, "check_same_thread": False},
            pool_size=pool_size,
            max_overflow=max_overflow,
        )
        _install_sqlite_hooks(engine)
        return engine
    kwargs: dict[str, Any] = {"pool_size": pool_size, "max_overflow": max_overflow}
    return create_engine(url, pool_pre_ping=True, **kwargs)


def sqlite_synchronous() -> str:
    """SQLite's `synchronous` setting: FULL unless $PREFDIFF_LABEL_SQLITE_SYNC says NORMAL
    (which, in WAL mode, survives a crash of the server but not of the machine)."""
    value = os.environ.get("PREFDIFF_LABEL_SQLITE_SYNC", "FULL").upper()
    if value not in ("FULL", "NORMAL", "EXTRA"):
        raise StudyError(f"PREFDIFF_LABEL_SQLITE_SYNC must be FULL, NORMAL or EXTRA, not {value!r}")
    return value


def _install_sqlite_hooks(engine: Engine) -> None:
    """Pragmas on every connection, and our own BEGIN / BEGIN IMMEDIATE."""

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # we emit BEGIN ourselves (pysqlite's is too lazy)
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA synchronous={sqlite_synchronous()}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={_SQLITE_BUSY_TIMEOUT_MS}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        immediate = conn.get_execution_options().get("prefdiff_write", False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


class Database:
    """An engine plus two session factories: `write()` and `read()` transactions."""

    def __init__(self, db: str) -> None:
        self.url = normalize_url(db)
        self.engine = make_engine(self.url)
        write_engine = self.engine.execution_options(prefdiff_write=True)
        self._write = sessionmaker(bind=write_engine, expire_on_commit=False)
        self._read = sessionmaker(bind=self.engine, expire_on_commit=False)
        # SQLite has one writer at a time anyway; queueing writers of this process on a lock is
        # fairer and far faster than letting them poll SQLite's busy handler (sleeps of up to
        # 100 ms). Other processes (the CLI) still wait through busy_timeout.
        self._write_lock = threading.Lock() if is_sqlite(self.engine) else None

    @contextmanager
    def write(self) -> Iterator[Session]:
        """A write transaction, committed (durably) when the block exits without error."""
        if self._write_lock is None:
            with self._write() as session, session.begin():
                yield session
            return
        with self._write_lock, self._write() as session, session.begin():
            yield session

    @contextmanager
    def read(self) -> Iterator[Session]:
        """A read-only transaction, ended by closing the session (the connection is rolled
        back; loaded objects stay readable, detached)."""
        with self._read() as session:
            yield session

    def dispose(self) -> None:
        """Close all pooled connections."""
        self.engine.dispose()


def alembic_config(connection: Any | None = None) -> Any:
    """An Alembic `Config` pointing at the migrations shipped inside the package."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["connection"] = connection
    return config


def migrate(db: Database | str) -> None:
    """Bring the database schema up to the newest migration (idempotent)."""
    from alembic import command

    database = db if isinstance(db, Database) else Database(db)
    try:
        with database.engine.begin() as connection:
            command.upgrade(alembic_config(connection), "head")
    finally:
        if not isinstance(db, Database):
            database.dispose()


def has_schema(db: Database) -> bool:
    """Whether the label tables exist (the database was migrated)."""
    return inspect(db.engine).has_table("votes")


def env_db(default: str = DEFAULT_DB) -> str:
    """The database URL from $PREFDIFF_LABEL_DB, else `default`."""
    return os.environ.get("PREFDIFF_LABEL_DB", default)
