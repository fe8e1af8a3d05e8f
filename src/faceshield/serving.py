"""Serving the web page's heavy work (protect, compare, lab, sweep) in one place: the shared
slots, each request's deadline and cancellation, and GPU time on ZeroGPU.

    @heavy(seconds=lambda request: 30)
    def protect(request: ProtectRequest) -> tuple: ...   # plain work on one typed payload

    async for out in protect.serve(request, idle=gr.skip()):   # in the Gradio handler
        yield out

Every heavy request holds one of settings.CONCURRENCY_LIMIT slots while its work runs in a
worker thread, inside protections.cancel.stop_when(event, settings.MAX_SECONDS): the attack
loops look at the event and the deadline once per step. Gradio cannot stop a worker thread;
it closes the handler instead (an async generator), when the request is cancelled or its client
goes away, and closing it sets the event, so the loop ends at its next step. A new request
waits for a slot until a cancelled one's thread has really finished, so at most
CONCURRENCY_LIMIT pieces of work run at any moment.
"""

from __future__ import annotations

try:  # ZeroGPU on Hugging Face Spaces; `spaces` must be imported before torch
    import spaces
except ImportError:  # anywhere else there is no GPU time to reserve
    spaces = None

import asyncio
import functools
import threading
from collections.abc import AsyncIterator, Callable
from typing import Any, Generic, TypeVar

from faceshield import settings
from faceshield.protections.cancel import Cancelled, stop_when

P = TypeVar("P")  # the typed payload of a request
R = TypeVar("R")  # what its work returns

ON_ZEROGPU = spaces is not None  # the work runs in another process (no progress callbacks)
POLL_SECONDS = 0.5  # how often a waiting handler yields (Gradio closes it only at a yield)

_slots = threading.BoundedSemaphore(settings.CONCURRENCY_LIMIT)
_running_lock = threading.Lock()
running = 0  # heavy work running in this process now (tests read it)


def _in_slot(stop: threading.Event, fn: Callable[[P], R], payload: P) -> R:
    """fn(payload) once a slot is free (Cancelled if the request is cancelled while waiting),
    under the request's stop event and deadline."""
    global running
    while not _slots.acquire(timeout=0.1):
        if stop.is_set():
            raise Cancelled
    try:
        with _running_lock:
            running += 1
        with stop_when(stop, settings.MAX_SECONDS):
            return fn(payload)
    finally:
        with _running_lock:
            running -= 1
        _slots.release()


def _on_gpu(fn: Callable[[P], R], seconds: Callable[[P], int]) -> Callable[[P], R]:
    """On ZeroGPU: fn with `seconds(payload)` of GPU time reserved, its deadline applied in the
    GPU process (the request's stop event cannot follow it there). Elsewhere: fn."""
    if spaces is None:
        return fn

    @functools.wraps(fn)
    def with_deadline(payload: P) -> R:
        with stop_when(None, settings.MAX_SECONDS):
            return fn(payload)

    reserved: Callable[[P], R] = spaces.GPU(duration=seconds)(with_deadline)
    return reserved


class Heavy(Generic[P, R]):
    """A piece of heavy work on one typed payload, served under the shared slots, the request's
    deadline and cancellation, with GPU time reserved (see the module's docstring)."""

    def __init__(self, fn: Callable[[P], R], seconds: Callable[[P], int]):
        self.fn = fn  # the plain work (tests and the CLI may call it directly)
        self.seconds = seconds
        self._work = _on_gpu(fn, seconds)
        functools.update_wrapper(self, fn)

    def __call__(self, payload: P) -> R:
        return self.fn(payload)

    async def serve(self, payload: P, idle: Any = None) -> AsyncIterator[Any]:
        """Run the work in a worker thread; yield `idle` every POLL_SECONDS while it runs, then
        its result. Closing this generator (Gradio does, on a cancel or a lost client) or
        cancelling its task stops the work at its next attack step."""
        stop = threading.Event()
        work = asyncio.ensure_future(asyncio.to_thread(_in_slot, stop, self._work, payload))
        work.add_done_callback(lambda done: done.cancelled() or done.exception())  # a Cancelled nobody awaits
        try:
            while True:
                done, _ = await asyncio.wait({work}, timeout=POLL_SECONDS)
                if done:
                    yield work.result()
                    return
                yield idle
        finally:
            if not work.done():
                stop.set()


def heavy(seconds: Callable[[P], int]) -> Callable[[Callable[[P], R]], Heavy[P, R]]:
    """Decorator: fn(payload) becomes Heavy work whose GPU reservation is seconds(payload)."""

    def wrap(fn: Callable[[P], R]) -> Heavy[P, R]:
        return Heavy(fn, seconds)

    return wrap


def seconds_for_steps(steps: int | None, fallback: int) -> int:
    """GPU seconds for an attack of `steps` iterations (`fallback` when not given)."""
    return int(30 + 0.5 * (steps if steps is not None else fallback))
