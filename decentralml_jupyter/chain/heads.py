"""Push notification of new finalized heads, so that agents act on a block the moment it
exists instead of on their next poll.

One background thread holds its own websocket with a `chain_subscribeFinalizedHeads`
subscription (the `Chain` client's socket serves request/reply calls under one lock, and a
subscription there would block them). When the subscription cannot be had, `wait` simply
times out and callers fall back to polling.
"""

from __future__ import annotations

import json
import logging
import threading

import websocket

log = logging.getLogger("dfml.heads")


class HeadWatcher:
    """Follows the finalized head number of the chain at ``url`` in a daemon thread."""

    def __init__(self, url: str, *, reconnect: float = 1.0):
        self.url = url
        self.number = -1
        # how many subscriptions have delivered a head: a new one (a reconnect) may follow
        # another chain at the same URL, whose heads can be lower; readers compare it to see
        self.generation = 0
        self._reconnect = reconnect
        self._cond = threading.Condition()
        self._wakes = 0
        self._stop = threading.Event()
        self._ws: websocket.WebSocket | None = None
        self._thread = threading.Thread(target=self._run, name="dfml-heads", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._ws = websocket.create_connection(self.url, timeout=30)
                self._ws.send(
                    json.dumps(
                        {
                            "id": 1,
                            "jsonrpc": "2.0",
                            "method": "chain_subscribeFinalizedHeads",
                            "params": [],
                        }
                    )
                )
                fresh = True
                while not self._stop.is_set():
                    try:
                        message = json.loads(self._ws.recv())
                    except websocket.WebSocketTimeoutException:
                        continue  # an idle chain: keep listening
                    head = (message.get("params") or {}).get("result") or {}
                    if "number" in head:
                        self._set(int(head["number"], 16), fresh)
                        fresh = False
            except Exception as err:  # a dead or restarting chain: try again shortly
                if not self._stop.is_set():
                    log.debug("head subscription to %s lost: %s", self.url, err)
                    self._stop.wait(self._reconnect)
            finally:
                ws, self._ws = self._ws, None
                if ws is not None:
                    ws.close()

    def _set(self, number: int, fresh: bool = False) -> None:
        with self._cond:
            if fresh:  # the first head of a (new) subscription counts even if it is lower
                self.generation += 1
                self.number = number
                self._cond.notify_all()
            elif number > self.number:
                self.number = number
                self._cond.notify_all()

    def wait(self, after: int, timeout: float) -> int:
        """Block until a finalized head above ``after`` is known, ``timeout`` passes, or
        `wake` is called; return the newest known head number (-1 if none yet)."""
        with self._cond:
            wakes = self._wakes
            self._cond.wait_for(
                lambda: self.number > after or self._wakes != wakes or self._stop.is_set(),
                timeout,
            )
            return self.number

    def wake(self) -> None:
        """Release every waiter now (e.g. on shutdown)."""
        with self._cond:
            self._wakes += 1
            self._cond.notify_all()

    def close(self) -> None:
        self._stop.set()
        self.wake()
        ws = self._ws
        if ws is not None:
            try:
                ws.close()
            except Exception:
                pass
        self._thread.join(timeout=2)
