"""Which store failures mean "the store is away", and how a client hears about it.

This is the one place that turns SQLAlchemy's and the drivers' connection errors into
:class:`~verbund.errors.StoreUnavailable` (503 ``store_unavailable`` with
``Retry-After``). Every session the :class:`~verbund.store.Store` hands out applies it
when its block ends, so a route that needs the store answers 503 while the store is
away, never a 500, and background loops catch the same exception by its base
:class:`~verbund.errors.StoreError`.

What counts as away: SQLAlchemy's operational, interface, disconnection and pool-timeout
errors (SQLite's "unable to open database file", "database is locked"; PostgreSQL's
"the database system is shutting down" or a connection that died), any error SQLAlchemy
marks as having invalidated its connection, and the drivers' own connection errors that
reach us unwrapped (asyncpg raises ``ConnectionRefusedError`` and its
``PostgresConnectionError`` family while connecting). Integrity and programming errors
are bugs or races, not outages, and stay what they are.
"""

from __future__ import annotations

from sqlalchemy import exc as sa

from verbund.errors import StoreError, StoreUnavailable

__all__ = ["RETRY_AFTER_SECONDS", "STORE_FAILURES", "store_unavailable", "unavailable_error"]

RETRY_AFTER_SECONDS = 5
"""What ``Retry-After`` tells a client while the store is away: a restart or fail-over
of the database usually takes seconds."""

# asyncpg's exceptions, matched by name so that asyncpg stays an optional driver
_ASYNCPG_AWAY = frozenset(
    {
        "PostgresConnectionError",
        "ConnectionDoesNotExistError",
        "CannotConnectNowError",
        "AdminShutdownError",
        "CrashShutdownError",
        "TooManyConnectionsError",
        "ConnectionFailureError",
        "ClientCannotConnectError",
        "InterfaceError",
    }
)

STORE_FAILURES: tuple[type[Exception], ...] = (sa.SQLAlchemyError, OSError, StoreError)
"""What background loops catch to retry later instead of dying: the mapped errors and
what reaches them unmapped (the engine used without a session, bulk inserts)."""


def unavailable_error() -> StoreUnavailable:
    return StoreUnavailable(
        "The store (database) is unreachable; try again shortly.",
        headers={"retry-after": str(RETRY_AFTER_SECONDS)},
    )


def store_unavailable(exc: BaseException) -> StoreUnavailable | None:
    """The 503 for ``exc`` if it means the store is away, else None (a bug: let it out)."""
    if isinstance(exc, StoreUnavailable):
        return exc
    if isinstance(exc, sa.DBAPIError) and exc.connection_invalidated:
        return unavailable_error()
    if isinstance(
        exc, sa.OperationalError | sa.InterfaceError | sa.DisconnectionError | sa.TimeoutError
    ):
        return unavailable_error()
    if isinstance(exc, OSError):  # refused, reset, unreachable, timed out
        return unavailable_error()
    if any(
        c.__module__.startswith("asyncpg") and c.__name__ in _ASYNCPG_AWAY
        for c in type(exc).__mro__
    ):
        return unavailable_error()
    return None
