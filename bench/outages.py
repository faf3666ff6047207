"""Calls to PostgreSQL that outlast its restart: a call that loses its connection is retried until the database
answers again, so that a restart costs no trial, replicate or lock, and prints one line per worker, no traceback."""

from __future__ import annotations

import functools
import inspect
import threading
import time

import optuna
import sqlalchemy

from bench.runtime import UserError, log

PATIENCE = 120.0  # seconds a call waits for the database to come back before the worker gives up
PAUSE = 1.0  # seconds between tries
_outage = {"since": None, "cause": ""}  # the outage this process is in, shared by its threads
_outage_lock = threading.Lock()


def connection_loss(error: BaseException) -> sqlalchemy.exc.DBAPIError | None:
    """The error, or the one it was raised from, that says the database went away (a restart, a dropped link)
    rather than that the call was at fault; None if there is none."""
    while error is not None:
        if isinstance(error, sqlalchemy.exc.OperationalError) or (  # e.g. "connection refused" while it restarts
                isinstance(error, sqlalchemy.exc.DBAPIError) and error.connection_invalidated):
            return error
        error = error.__cause__ or error.__context__
    return None


def is_connection_loss(error: BaseException) -> bool:
    return connection_loss(error) is not None


def retrying(call, what: str = "PostgreSQL"):
    """`call`, retried while `what` is unreachable, for PATIENCE seconds at most."""

    @functools.wraps(call)
    def retried(*args, **kwargs):
        while True:
            try:
                result = call(*args, **kwargs)
            except Exception as error:
                loss = connection_loss(error)
                if loss is None:
                    raise
                _wait(what, loss)
                continue
            _recovered(what)
            return result

    return retried


def _wait(what: str, loss: sqlalchemy.exc.DBAPIError) -> None:
    with _outage_lock:
        if _outage["since"] is None:
            _outage.update(since=time.monotonic(), cause=str(loss.orig or loss).strip().splitlines()[0])
        waited = time.monotonic() - _outage["since"]
    if waited > PATIENCE:
        raise UserError(f"{what} unreachable for {waited:.0f} s ({_outage['cause']}); this worker stops, and its "
                        "running trial is retried by another or the next run") from None
    time.sleep(PAUSE)


def _recovered(what: str) -> None:
    if _outage["since"] is None:  # the usual case: no lock taken
        return
    with _outage_lock:
        if _outage["since"] is not None:
            log(f"{what} was unreachable for {time.monotonic() - _outage['since']:.1f} s ({_outage['cause']}); "
                "its calls were retried, nothing lost")
            _outage["since"] = None


class ReconnectingStorage(optuna.storages.RDBStorage):
    """Optuna's RDBStorage whose every call (the heartbeat thread's included) outlasts a database restart."""


for _name, _method in inspect.getmembers(optuna.storages.RDBStorage, inspect.isfunction):
    if not _name.startswith("_") or _name == "_get_stale_trial_ids":
        setattr(ReconnectingStorage, _name, retrying(_method))
