"""Request cancellation and deadlines for the attacks (bounded compute per request)."""

from __future__ import annotations

import contextlib
import contextvars
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

# Bounded compute: a request runs its attacks inside `stop_when(event, seconds)`; every
# iterative loop calls check_stop() once per step. A cancelled request (the event is set)
# ends the loop with Cancelled; a request past its deadline keeps the best result so far
# and says so. Gradio cannot kill a handler's worker thread, so the loop has to look.


class Cancelled(Exception):
    """The request that asked for this attack was cancelled or its client went away."""


@dataclass
class _Stop:
    event: threading.Event | None
    deadline: float | None
    seconds: float | None


_stop: contextvars.ContextVar[_Stop | None] = contextvars.ContextVar("faceshield_stop", default=None)
steps_checked = 0  # attack steps seen by check_stop() in this process (tests read it)


@contextlib.contextmanager
def stop_when(event: threading.Event | None = None, seconds: float | None = None) -> Iterator[None]:
    """Inside this block check_stop() raises Cancelled once `event` is set and reports the
    deadline `seconds` from now (None: no deadline). Nested inside another, it keeps the outer
    event when given none."""
    deadline = time.monotonic() + seconds if seconds else None
    outer = _stop.get()
    if event is None and outer is not None:
        event = outer.event
    token = _stop.set(_Stop(event, deadline, seconds))
    try:
        yield
    finally:
        _stop.reset(token)


def check_cancelled() -> None:
    """Raises Cancelled if the request was cancelled (for work that is not an attack step:
    judging a result face by face)."""
    stop = _stop.get()
    if stop is not None and stop.event is not None and stop.event.is_set():
        raise Cancelled


def time_up() -> str | None:
    """Raises Cancelled if the request was cancelled; says so when its time is up (None otherwise):
    for a loop over things that are not attack steps (compare's protections)."""
    check_cancelled()
    stop = _stop.get()
    if stop is not None and stop.deadline is not None and time.monotonic() > stop.deadline:
        return f"the time limit of {stop.seconds:g} s per request was reached"
    return None


def check_stop(step: int) -> str | None:
    """Called once per attack step (counted in steps_checked): raises Cancelled if the request
    was cancelled; returns a notice for the user when the request's time is up (the loop then
    stops and keeps its best result so far); None otherwise."""
    global steps_checked
    steps_checked += 1
    late = time_up()
    return None if late is None else f"Stopped after {step} steps: {late}, so this is the best result so far."
