"""What several workers on one sweep must do once (create a study's MLflow run, top up its trial budget, test its
best model, train a replicate) is decided by the database that holds the Optuna studies, not by timing.

On PostgreSQL: a session-level advisory lock per key. One connection holds it at a time, and PostgreSQL releases it
when its holder unlocks or its connection ends, so a killed worker never leaves a key held. On SQLite one process
owns the whole store (runtime.only_process): every key is free.
"""

from __future__ import annotations

import contextlib
import hashlib

import sqlalchemy
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from bench.outages import is_connection_loss, retrying
from bench.runtime import UserError


class Keys:
    """Advisory locks on the Optuna storage's database, one per key string."""

    def __init__(self, storage_url: str):
        backend = make_url(storage_url).get_backend_name()
        if backend not in ("sqlite", "postgresql"):
            raise UserError(f"storage {backend}: workers coordinate through PostgreSQL (or one process on SQLite)")
        self.engine = None
        if backend == "postgresql":
            # A connection per hold: its end releases the lock. AUTOCOMMIT: no transaction stays open meanwhile.
            self.engine = sqlalchemy.create_engine(storage_url, poolclass=NullPool, isolation_level="AUTOCOMMIT")

    @contextlib.contextmanager
    def hold(self, key: str, wait: bool = True):
        """Hold `key` for the block; yields a function that releases it early, or, with wait=False, None when
        another worker holds it."""
        if self.engine is None:
            yield lambda: None
            return
        number = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big", signed=True)
        connection = retrying(self._lock)(number, wait)
        if connection is None:
            yield None
            return
        held = True

        def release() -> None:
            nonlocal held
            if held:
                held = False
                try:
                    connection.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:k)"), {"k": number})
                except sqlalchemy.exc.DBAPIError as error:
                    if not is_connection_loss(error):
                        raise  # else the database restarted meanwhile, and the lock went with its session
                finally:
                    connection.close()

        try:
            yield release
        finally:
            release()

    def _lock(self, number: int, wait: bool) -> sqlalchemy.Connection | None:
        """A connection holding the lock `number`; None, without wait, if another holds it."""
        connection = self.engine.connect()
        try:
            if wait:
                connection.execute(sqlalchemy.text("SELECT pg_advisory_lock(:k)"), {"k": number})
            elif not connection.execute(sqlalchemy.text("SELECT pg_try_advisory_lock(:k)"), {"k": number}).scalar():
                connection.close()
                return None
        except BaseException:
            connection.close()
            raise
        return connection

    def is_held(self, key: str) -> bool:
        """Whether another worker holds `key` now."""
        with self.hold(key, wait=False) as free:
            return free is None
