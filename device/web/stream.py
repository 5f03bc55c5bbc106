"""The live stream: the store's changes become one SSE event as soon as they arrive, then for
`interval_ms` what arrives is coalesced (the latest per name) into the next event; each event is
encoded once per symbol filter and queued to every client. A client's queue is bounded; one that
falls `queue_batches` behind is disconnected (its browser reconnects and reloads the snapshot)
instead of growing the gateway's memory."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from device.web.settings import StreamSettings
from device.web.store import Store, Update

__all__ = ["Hub"]

logger = logging.getLogger(__name__)


@dataclass(eq=False)
class _Client:
    symbols: frozenset[str] | None
    queue: asyncio.Queue[bytes | None]
    dropped: bool = field(default=False)


class Hub:
    """Fan-out of store updates to stream clients, all on the event loop's thread."""

    def __init__(self, store: Store, settings: StreamSettings) -> None:
        self.store = store
        self.settings = settings
        self._clients: set[_Client] = set()
        self._task: asyncio.Task[None] | None = None
        self.batches = 0

    @property
    def clients(self) -> int:
        return len(self._clients)

    def full(self) -> bool:
        return len(self._clients) >= self.settings.max_clients

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        changed = asyncio.Event()

        def wake() -> None:
            # The store is written on paho's thread: hop onto the loop to set the event.
            loop.call_soon_threadsafe(changed.set)

        self.store.on_change(wake)
        self._task = loop.create_task(self._run(changed))

    async def stop(self) -> None:
        self.store.on_change(None)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for client in list(self._clients):  # _end removes it
            self._end(client)

    async def _run(self, changed: asyncio.Event) -> None:
        """Send what changed at once, then rest `interval_ms`: a lone forecast is not held back
        by a timer, and a burst costs every client one write per interval, not one per message."""
        gap = self.settings.interval_ms / 1000
        changed.set()  # anything stored before the start (retained messages) goes out now
        while True:
            await changed.wait()
            changed.clear()
            updates = self.store.take_updates()
            if updates:
                self.publish(updates)
                await asyncio.sleep(gap)

    def publish(self, updates: list[Update]) -> None:
        """Queue one event with `updates` to every client (each sees only its symbols)."""
        self.batches += 1
        encoded: dict[frozenset[str] | None, bytes | None] = {}
        for client in list(self._clients):
            if client.symbols not in encoded:
                encoded[client.symbols] = _encode(updates, client.symbols)
            event = encoded[client.symbols]
            if event is None:
                continue
            try:
                client.queue.put_nowait(event)
            except asyncio.QueueFull:
                logger.warning("a stream client fell behind; disconnecting it")
                self._end(client)

    def _end(self, client: _Client) -> None:
        client.dropped = True
        self._clients.discard(client)
        while not client.queue.empty():
            client.queue.get_nowait()
        client.queue.put_nowait(None)

    async def events(self, symbols: frozenset[str] | None) -> AsyncIterator[bytes]:
        """Each batch for one client as a whole SSE `update` event, until it falls behind or the
        gateway stops."""
        client = _Client(symbols, asyncio.Queue(maxsize=self.settings.queue_batches))
        self._clients.add(client)
        try:
            while (event := await client.queue.get()) is not None:
                # Batches that piled up meanwhile (a slow network, a busy machine) go out as one
                # write: fewer sends and wake-ups, so a client that lags catches up.
                while not client.queue.empty() and (more := client.queue.get_nowait()):
                    event += more
                yield event
                if client.dropped:
                    return
        finally:
            self._clients.discard(client)


def _encode(updates: list[Update], symbols: frozenset[str] | None) -> bytes | None:
    """The SSE frame, built once per batch and filter rather than once per client (JSON has no
    raw newlines, so the data is one line)."""
    chosen = [
        u.as_json()
        for u in updates
        if symbols is None or u.kind not in ("price", "trend") or u.name in symbols
    ]
    if not chosen:
        return None
    return (
        b"event: update\r\ndata: "
        + json.dumps(chosen, separators=(",", ":")).encode()
        + b"\r\n\r\n"
    )
