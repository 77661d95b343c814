"""A one-shot JSON-RPC call over HTTP, for health checks that must not hold a websocket open.

Substrate nodes and Chopsticks serve HTTP and websocket JSON-RPC on the same port.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request

from ..errors import ChainError, ChainNotReachable


def http_url(url: str) -> str:
    if url.startswith("ws://"):
        return "http://" + url[len("ws://") :]
    if url.startswith("wss://"):
        return "https://" + url[len("wss://") :]
    return url


def rpc_call(url: str, method: str, params: list, timeout: float = 5.0):
    """Call ``method`` at ``url``; raise ChainNotReachable when nothing answers."""
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}).encode()
    req = urllib.request.Request(
        http_url(url), data=body, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            reply = json.loads(resp.read())
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError) as exc:
        raise ChainNotReachable(
            f"dev chain not reachable at {url}: {exc}",
            hint="start one with: dfml chain up (or pass --url of a running chain)",
        ) from None
    if "error" in reply:
        raise ChainError(f"{method} failed at {url}: {reply['error']}")
    return reply["result"]
