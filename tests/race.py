"""Run calls at the same moment, each in its own thread and database connection (race tests on PostgreSQL)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import TypeVar

from django.db import close_old_connections, connection

T = TypeVar("T")


def race(calls: Sequence[Callable[[], T]], *, timeout: float = 60) -> list[T | Exception]:
    """Start every call behind one barrier; returns, in the order of ``calls``, what each returned or raised."""
    barrier = threading.Barrier(len(calls))
    outcomes: list[T | Exception | None] = [None] * len(calls)

    def run(index: int) -> None:
        try:
            barrier.wait()
            try:
                outcomes[index] = calls[index]()
            except Exception as exc:  # noqa: BLE001 - the outcome under test
                outcomes[index] = exc
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=timeout)
    close_old_connections()
    if any(thread.is_alive() for thread in threads):
        raise TimeoutError(f"a racing call did not finish within {timeout} s")
    return outcomes  # type: ignore[return-value]
