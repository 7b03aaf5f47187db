"""A transaction held open in another database for a whole test run, on its own thread.

On a shared PostgreSQL server some other session always has a transaction open. The
suite runs with one too, so that every PostgreSQL test proves the log stays live beside
it (``make test`` turns it on with ``EVENTFOLD_TEST_HOLD_TRANSACTION=1``).
"""

from __future__ import annotations

import asyncio
import threading

import asyncpg

_READY_WITHIN = 10.0
"""Seconds to wait for the connection and its transaction id: a bound, not a measure."""


class HeldTransaction:
    """Holds ``BEGIN; SELECT pg_current_xact_id()`` open on ``dsn`` until :meth:`stop`."""

    def __init__(self, dsn: str) -> None:
        self._dsn = dsn
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="held-transaction", daemon=True)
        self._ready = threading.Event()
        self._release: asyncio.Event | None = None
        self.xid: int | None = None
        self.error: BaseException | None = None
        self.still_open_at_stop: bool | None = None

    def start(self) -> None:
        """Open the transaction; raise what went wrong if it could not be opened."""
        self._thread.start()
        if not self._ready.wait(_READY_WITHIN):
            msg = f"no transaction open on {self._dsn} after {_READY_WITHIN} s"
            raise TimeoutError(msg)
        if self.error is not None:
            raise self.error

    def stop(self) -> None:
        """End the transaction (rolled back) and the thread; safe to call twice."""
        if self._release is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._release.set)
        self._thread.join(_READY_WITHIN)

    def _run(self) -> None:
        try:
            self._loop.run_until_complete(self._hold())
        except BaseException as exc:  # noqa: BLE001 - handed to start() through self.error
            self.error = exc
            self._ready.set()
        finally:
            self._loop.close()

    async def _hold(self) -> None:
        self._release = asyncio.Event()
        connection = await asyncpg.connect(
            self._dsn, server_settings={"application_name": "eventfold-tests-held-transaction"}
        )
        try:
            await connection.execute("BEGIN")
            self.xid = int(await connection.fetchval("SELECT pg_current_xact_id()::text"))
            self._ready.set()
            await self._release.wait()
            xid = await connection.fetchval("SELECT pg_current_xact_id_if_assigned()::text")
            self.still_open_at_stop = xid is not None and int(xid) == self.xid
        finally:
            await connection.close()  # the server rolls the transaction back
