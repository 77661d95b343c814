"""What every long-running role shares: a chain connection with its indexer, the storage
client, a signing key, and a loop that steps on every new finalized block (pushed by a head
subscription; ``poll`` seconds at most between steps), survives transient failures and stops
cleanly on SIGTERM.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path

from .. import config
from ..chain import Chain
from ..chain.heads import HeadWatcher
from ..errors import ChainNotReachable, DfmlError, KeyLoadError
from ..protocol.accounts import SS58_FORMAT
from ..protocol.client import ProtocolClient
from ..protocol.indexer import Indexer
from ..protocol.state import State
from ..storage import KuboStore

# a model that may train: agents stake on it and warm up for it
LIVE_MODEL = ("proposed", "approved", "training")


class Agent:
    """Follows the chain and acts on the protocol state, one `step` per poll."""

    role = "agent"

    def __init__(
        self,
        url: str,
        storage: str,
        key: str,
        *,
        poll: float = 2.0,
        index_db: str | Path | None = None,
        from_block: int | None = None,
    ):
        self.log = logging.getLogger(f"dfml.{self.role}")
        # the protocol's spelling of accounts (format 42), whatever the chain shows: an agent
        # compares its own address with the state's
        self.chain = Chain(url, ss58_format=SS58_FORMAT)
        # the protocol's first block: ``from_block`` (--from-block), else DFML_FROM_BLOCK
        if from_block is None:
            from_block = config.default_from_block()
        self.proto = ProtocolClient(
            self.chain,
            Indexer(self.chain, index_db, from_block=from_block, save_every=INDEX_SAVE_EVERY),
        )
        self.store = KuboStore(storage, timeout=30.0)
        self.key = self.chain.keypair(key)
        self.address = self.key.ss58_address
        self.poll = poll
        self.stopping = threading.Event()
        self.heads: HeadWatcher | None = None
        self._spec_cache: dict[str, bytes] = {}
        self._weights_size: dict[str, int] = {}  # initial weights CID -> its declared size
        self._warm: set[int] = set()  # models whose TensorFlow runtime is built and traced

    def stop(self) -> None:
        self.stopping.set()
        if self.heads is not None:
            self.heads.wake()

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, lambda *_: self.stop())
        signal.signal(signal.SIGINT, lambda *_: self.stop())

    def _reconnect(self, failures: int) -> None:
        try:
            self.chain.reconnect()
            self.log.info("reconnected to %s (attempt %d)", self.chain.url, failures)
        except ChainNotReachable as err:
            self.log.warning("%s; retrying with backoff", err)

    def weights_limit(self, model, masked: bool = False) -> int:
        """The most bytes any weights of ``model`` may take: every global model, update and
        aggregate has the initial weights' tensors, so their size (read from the initial
        weights' root block, never the whole file) bounds them; masked updates hold 8-byte
        integers, at most twice a float32 model."""
        cid = model.weights_cid
        if cid not in self._weights_size:
            self._weights_size[cid] = self.store.stat(cid).size
        size = self._weights_size[cid]
        return (2 * size if masked else size) + WEIGHTS_SLACK

    def spec(self, cid: str) -> bytes:
        if cid not in self._spec_cache:
            self._spec_cache[cid] = self.store.get(cid, max_bytes=MAX_SPEC_BYTES)
        return self._spec_cache[cid]

    def step(self, state: State) -> None:  # pragma: no cover - each role defines it
        raise NotImplementedError

    def warm_up(self, models, work) -> None:
        """Run ``work(model)`` once for each of ``models`` this agent has not seen yet, at the
        end of a step, so that TensorFlow builds and traces the model (seconds) before the
        first round needs it rather than on the round's critical path."""
        for model in models:
            if model.id in self._warm:
                continue
            self._warm.add(model.id)  # once, whatever happens: a failure is only logged
            started = time.perf_counter()
            try:
                work(model)
            except DfmlError as err:
                self.log.warning("model %d: warm-up skipped: %s", model.id, err)
                continue
            self.log.info("model %d: warmed up in %.1f s", model.id, time.perf_counter() - started)

    def run(self, until: float | None = None) -> None:
        """Poll and act until stopped (SIGTERM) or ``until`` seconds have passed."""
        self.log.info("%s %s following %s", self.role, self.address, self.chain.url)
        deadline = None if until is None else time.monotonic() + until
        self.heads = HeadWatcher(self.chain.url)
        failures = 0
        while not self.stopping.is_set():
            if deadline is not None and time.monotonic() > deadline:
                break
            seen = self.heads.number  # a block arriving during the step wakes the next one
            try:
                self.step(self.proto.state())
                if failures:
                    self.log.info("back after %d failed step%s", failures, "s"[: failures - 1])
                failures = 0
            except DfmlError as err:
                # a dead service or a rejected call must not kill the agent: log, back off
                failures += 1
                self.log.warning("%s (hint: %s)", err, err.hint)
                if isinstance(err, ChainNotReachable):
                    self._reconnect(failures)
            except Exception as exc:
                failures += 1
                if _connection_lost(exc):
                    self.log.warning("chain connection lost (%s): reconnecting", exc)
                    self._reconnect(failures)
                else:
                    self.log.exception("step failed")
            if failures:
                self.stopping.wait(min(0.5 * 2**failures, 20))
            else:
                wait = self.poll
                if deadline is not None:
                    wait = max(0.0, min(wait, deadline - time.monotonic()))
                self.heads.wait(after=seen, timeout=wait)
        self.heads.close()
        self.proto.close()


# seconds between an agent's index snapshots (and at its stop): a restart replays at most
# that long of blocks, where saving the whole state on every block cost every agent a
# growing share of each block's time
INDEX_SAVE_EVERY = 10.0
MAX_SPEC_BYTES = 16 << 20  # a model's architecture (Keras JSON)
WEIGHTS_SLACK = 64 << 10  # a serialized header's differences between copies of one model


def _connection_lost(exc: BaseException) -> bool:
    """Whether ``exc`` says the chain's websocket is gone (its classes vary by library)."""
    from ..chain.client import is_connection_error

    return is_connection_error(exc)


def add_from_block_option(parser) -> None:
    """``--from-block N`` on an agent's parser (default DFML_FROM_BLOCK): pass its value to
    the agent as ``from_block``."""
    parser.add_argument(
        "--from-block",
        type=int,
        default=None,
        help="the protocol's first block on this chain: nothing before it is read "
        "(default: DFML_FROM_BLOCK, or genesis)",
    )


def agent_keys(
    key: str | list[str] | None, key_file: str | None, argv: list[str] | None
) -> list[str]:
    """The keys an agent signs with, from ``--key`` (dev URIs or key files), ``--key-file`` or
    DFML_KEY. Started as a process (``argv`` None), a secret in its own argv is refused: every
    local user can read a process list."""
    from ..chain.keys import check_key_file, refuse_secret_in_argv

    if argv is None:
        refuse_secret_in_argv(sys.argv[1:])
    if key_file:
        return [str(check_key_file(key_file))]
    if key:
        return [key] if isinstance(key, str) else list(key)
    env = os.environ.get("DFML_KEY")
    if env:
        return [env]
    raise KeyLoadError(
        "no signing key given",
        hint="pass --key //Dev1 on a dev chain, --key-file FILE, or set DFML_KEY",
    )


def run_agent(agent: Agent) -> int:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s", force=True
    )
    agent.install_signal_handlers()
    agent.run()
    return 0
