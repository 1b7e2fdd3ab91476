"""The store: an async SQLAlchemy engine, its sessions and its migrations."""

from __future__ import annotations

from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from alembic import command
from alembic.config import Config as AlembicConfig
from sqlalchemy import Table, event, select
from sqlalchemy.engine import Connection
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.sql.schema import ScalarElementColumnDefault

from verbund.errors import StoreError
from verbund.store._clock import store_now
from verbund.store._errors import store_unavailable

_HERE = Path(__file__).parent


T = TypeVar("T")


class _Session(AsyncSession):
    """A session whose block turns "the store is away" into :class:`StoreUnavailable`, so
    that every caller gets the 503 without catching SQLAlchemy's exceptions itself."""

    async def __aexit__(
        self,
        type_: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        try:
            await super().__aexit__(type_, value, traceback)
        except Exception as closing:
            if value is None:  # closing failed on its own
                mapped = store_unavailable(closing)
                if mapped is None:
                    raise
                raise mapped from closing
        if value is not None and not isinstance(value, StoreError):
            mapped = store_unavailable(value)
            if mapped is not None:
                raise mapped from value


class Store:
    """Owns the engine. Create one per process in the app factory; close it on shutdown."""

    def __init__(self, url: str) -> None:
        self.url = url
        kwargs: dict[str, Any] = {}
        if url.startswith("sqlite"):
            path = url.split("///", 1)[-1]
            if path and path != ":memory:":
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            kwargs["connect_args"] = {"timeout": 30}
        else:
            kwargs.update(pool_size=10, max_overflow=10, pool_pre_ping=True)
        self.engine: AsyncEngine = create_async_engine(url, **kwargs)
        if url.startswith("sqlite"):
            event.listen(self.engine.sync_engine, "connect", _sqlite_pragmas)
        self.sessions = async_sessionmaker(self.engine, class_=_Session, expire_on_commit=False)

    def session(self) -> AsyncSession:
        """A session; used as ``async with``, a store that is away raises StoreUnavailable."""
        return self.sessions()

    async def owned(self, row_type: type[T], row_id: str, institution_id: str) -> T | None:
        """The row with this id if it belongs to the institution, else None: another
        institution's id reads exactly like one that does not exist."""
        table: Any = row_type
        async with self.session() as s:
            found: T | None = (
                await s.execute(
                    select(row_type).where(
                        table.id == row_id, table.institution_id == institution_id
                    )
                )
            ).scalar_one_or_none()
        return found

    def now_sql(self) -> Any:
        """The store's current Unix time as an SQL expression (for leases and windows)."""
        return store_now(self.engine.dialect.name)

    async def now(self) -> float:
        """The store's current Unix time."""
        async with self.session() as s:
            value: Any = await s.scalar(select(self.now_sql()))
        return float(value)

    async def migrate(self) -> None:
        """Bring the schema to the newest Alembic revision."""
        try:
            async with self.engine.begin() as conn:
                await conn.run_sync(_upgrade)
        except SQLAlchemyError as exc:
            raise StoreError(f"store migration failed: {type(exc).__name__}") from exc

    async def insert_json_ignoring_duplicates(self, table: Table, key: str, rows: bytes) -> None:
        """Insert the rows of a JSON array of objects, skipping rows whose ``key`` exists
        already (replays are harmless). The database parses the JSON.

        For bulk writes from an access point (usage records): building parameters in
        Python costs 20-40 us a row on the event loop that serves requests (SQLAlchemy's
        executemany, or even plain tuples after ``orjson.loads``), so a flush of a few
        hundred records held every request up for 5-15 ms. Here the loop passes one
        string; SQLite's ``json_each`` or PostgreSQL's ``json_populate_recordset`` does
        the rest in C, in the driver's thread or in the server. Fields an object lacks
        (written by an older version) get the column's scalar default, else NULL;
        fields the table lacks are ignored.
        """
        names = [c.name for c in table.columns]
        values = []
        for c in table.columns:
            default = c.default.arg if isinstance(c.default, ScalarElementColumnDefault) else None
            field = (
                f"r.{c.name}"
                if self.engine.dialect.name == "postgresql"
                else f"json_extract(value, '$.{c.name}')"
            )
            values.append(field if default is None else f"coalesce({field}, {_literal(default)})")
        if self.engine.dialect.name == "postgresql":
            source = f"json_populate_recordset(NULL::{table.name}, $1::json) AS r"
        else:
            source = "json_each(?) WHERE true"  # WHERE: SQLite's upsert-after-SELECT rule
        # names and defaults come from the table's metadata, never from input
        sql = (
            f"INSERT INTO {table.name} ({', '.join(names)}) "  # noqa: S608
            f"SELECT {', '.join(values)} FROM {source} ON CONFLICT ({key}) DO NOTHING"
        )
        try:
            async with self.engine.begin() as conn:
                await conn.exec_driver_sql(sql, (rows.decode(),))
        except Exception as exc:
            mapped = store_unavailable(exc)
            if mapped is None:
                raise
            raise mapped from exc

    async def ping(self) -> bool:
        try:
            async with self.engine.connect() as conn:
                await conn.exec_driver_sql("SELECT 1")
        except (SQLAlchemyError, OSError):
            return False
        return True

    async def aclose(self) -> None:
        await self.engine.dispose()


def alembic_config() -> AlembicConfig:
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(_HERE / "migrations"))
    return cfg


def _upgrade(conn: Connection) -> None:
    cfg = alembic_config()
    cfg.attributes["connection"] = conn
    command.upgrade(cfg, "head")


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA secure_delete=ON")  # erased data does not linger in freed pages
    cur.close()


def _literal(value: object) -> str:
    """A column default as SQL (numbers, booleans, strings from the table definitions)."""
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    raise StoreError(f"bulk insert: no SQL literal for a default of type {type(value).__name__}")
