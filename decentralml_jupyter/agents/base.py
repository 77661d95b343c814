"""What every long-running role shares: a chain connection with its indexer, the storage
client, a signing key, and a polling loop that survives transient failures and stops cleanly
on SIGTERM.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from pathlib import Path

from ..chain import Chain
from ..errors import DfmlError
from ..protocol.client import ProtocolClient
from ..protocol.indexer import Indexer
from ..protocol.state import State
from ..storage import KuboStore


class Agent:
    """Follows the chain and acts on the protocol state, one `step` per poll."""

    role = "agent"

    def __init__(
        self,
        url: str,
        storage: str,
        key: str,
        *,
        poll: float = 0.5,
        index_db: str | Path | None = None,
    ):
        self.log = logging.getLogger(f"dfml.{self.role}")
        self.chain = Chain(url)
        self.proto = ProtocolClient(self.chain, Indexer(self.chain, index_db))
        self.store = KuboStore(storage, timeout=30.0)
        self.key = self.chain.keypair(key)
        self.address = self.key.ss58_address
        self.poll = poll
        self.stopping = threading.Event()
        self._spec_cache: dict[str, bytes] = {}

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, lambda *_: self.stopping.set())
        signal.signal(signal.SIGINT, lambda *_: self.stopping.set())

    def spec(self, cid: str) -> bytes:
        if cid not in self._spec_cache:
            self._spec_cache[cid] = self.store.get(cid)
        return self._spec_cache[cid]

    def step(self, state: State) -> None:  # pragma: no cover - each role defines it
        raise NotImplementedError

    def run(self, until: float | None = None) -> None:
        """Poll and act until stopped (SIGTERM) or ``until`` seconds have passed."""
        self.log.info("%s %s following %s", self.role, self.address, self.chain.url)
        deadline = None if until is None else time.monotonic() + until
        failures = 0
        while not self.stopping.is_set():
            if deadline is not None and time.monotonic() > deadline:
                break
            try:
                self.step(self.proto.state())
                failures = 0
            except DfmlError as err:
                # a dead service or a rejected call must not kill the agent: log, back off
                failures += 1
                self.log.warning("%s (hint: %s)", err, err.hint)
            except Exception:
                failures += 1
                self.log.exception("step failed")
            self.stopping.wait(self.poll * min(2**failures, 20))
        self.proto.close()


def run_agent(agent: Agent) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    agent.install_signal_handlers()
    agent.run()
    return 0
