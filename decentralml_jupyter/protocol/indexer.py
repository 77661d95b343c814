"""The indexer: replays finalized blocks into the protocol `State` and keeps it in SQLite.

For each block it finds the protocol remarks that really executed (each matched to its
`System.Remarked` event), with the transfers of the `batch_all` holding them, feeds them to
`State.apply` in chain order and ticks the block. A snapshot after each sync lets it resume
without re-reading from genesis; a chain that no longer has the indexed block is re-indexed.
"""

from __future__ import annotations

import hashlib
import sqlite3
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from .. import config
from ..chain import Chain
from .accounts import normalize_address
from .calls import is_protocol_remark
from .state import State
from .values import CallContext, ProtocolParams, Transfer

_TRANSFER_FUNCTIONS = {"transfer", "transfer_keep_alive", "transfer_allow_death"}
SNAPSHOT_EVERY = 500  # blocks; a long first sync survives an interruption


@dataclass(frozen=True)
class _Candidate:
    """A remark found in an extrinsic's call tree, before it is matched to its event."""

    value: object  # as substrate-interface decoded it: a str (UTF-8 or 0x-hex) or bytes
    transfers: tuple[tuple[str, int, int | None], ...]  # (dest, amount, asset) in its batch_all
    batch_index: int


def _args(call: dict) -> dict:
    return {a["name"]: a["value"] for a in call.get("call_args", [])}


def _address(value) -> str:
    if isinstance(value, dict):  # MultiAddress {"Id": ...}
        value = next(iter(value.values()))
    return normalize_address(value)


def _transfer_of(call: dict) -> tuple[str, int, int | None] | None:
    module, fn = call["call_module"], call["call_function"]
    if fn not in _TRANSFER_FUNCTIONS:
        return None
    args = _args(call)
    if module == "Balances":
        return (_address(args["dest"]), int(args["value"]), None)
    if module == "Assets":
        return (_address(args["target"]), int(args["amount"]), int(args["id"]))
    return None


def _walk(call: dict, transfers: tuple = (), index: int = 0) -> Iterator[_Candidate]:
    """Every remark in a call tree, in dispatch order, with its atomic batch's transfers."""
    module, fn = call["call_module"], call["call_function"]
    args = _args(call)
    if module == "System" and fn in ("remark_with_event", "remark"):
        if fn == "remark_with_event":  # plain remarks emit no event, so they cannot be matched
            yield _Candidate(args["remark"], transfers, index)
    elif module == "Utility" and fn == "batch_all":
        inner = args["calls"]
        found = tuple(t for t in (_transfer_of(c) for c in inner) if t is not None)
        for i, c in enumerate(inner):
            yield from _walk(c, found, i)
    elif module == "Utility" and fn in ("batch", "force_batch"):
        # not atomic: a transfer in it may have failed while the remark ran, so none counts
        for i, c in enumerate(args["calls"]):
            yield from _walk(c, (), i)
    elif "call" in args and isinstance(args["call"], dict) and "call_module" in args["call"]:
        # Multisig.as_multi, Proxy.proxy, Utility.as_derivative, ...: the origin changes, which
        # the Remarked event's sender tells us; it keeps its place in an enclosing batch
        yield from _walk(args["call"], (), index)


def _remark_bytes(value, expected_hash: str) -> bytes | None:
    """The remark's bytes, disambiguating substrate-interface's UTF-8-or-hex decoding by hash."""
    options = []
    if isinstance(value, bytes | bytearray):
        options.append(bytes(value))
    elif isinstance(value, str):
        if value.startswith("0x"):
            try:
                options.append(bytes.fromhex(value[2:]))
            except ValueError:
                pass
        options.append(value.encode("utf-8"))
    for raw in options:
        if "0x" + hashlib.blake2b(raw, digest_size=32).hexdigest() == expected_hash:
            return raw
    return None


def extract_calls(extrinsics: list, events: list[dict], block_number: int, block_hash: str):
    """(CallContext, remark bytes) for every protocol remark that executed in a block."""
    remarked: dict[int, list[dict]] = {}
    for e in events:
        if (e["module"], e["event"]) == ("System", "Remarked") and e["extrinsic_index"] is not None:
            remarked.setdefault(e["extrinsic_index"], []).append(e["attributes"])
    out = []
    for idx in sorted(remarked):
        call = extrinsics[idx].value["call"]
        queue = remarked[idx]
        for cand in _walk(call):
            if not queue:
                break
            raw = _remark_bytes(cand.value, queue[0]["hash"])
            if raw is None:
                continue  # this remark did not execute (e.g. a multisig approval in waiting)
            sender = normalize_address(queue.pop(0)["sender"])
            if not is_protocol_remark(raw):
                continue
            transfers = tuple(Transfer(sender, d, a, asset) for d, a, asset in cand.transfers)
            ctx = CallContext(block_number, block_hash, idx, cand.batch_index, sender, transfers)
            out.append((ctx, raw))
    return out


class Indexer:
    """Follows one chain and keeps its protocol `State` in a SQLite file.

    ``db_path`` None keeps it in memory (a replay from genesis on every start).
    """

    def __init__(
        self,
        chain: Chain,
        db_path: str | Path | None = None,
        params: ProtocolParams | None = None,
    ):
        self.chain = chain
        self.params = params
        self.db = sqlite3.connect(str(db_path) if db_path else ":memory:")
        self.db.execute(
            "CREATE TABLE IF NOT EXISTS snapshot (id INTEGER PRIMARY KEY CHECK (id = 1), "
            "block_number INTEGER, block_hash TEXT, state BLOB)"
        )
        self.state = State(params)
        self.block_number = 0  # last block folded into the state
        self.block_hash: str | None = None
        row = self.db.execute("SELECT block_number, block_hash, state FROM snapshot").fetchone()
        if row:
            self.block_number, self.block_hash = row[0], row[1]
            self.state = State.from_bytes(row[2])

    @classmethod
    def for_chain(cls, chain: Chain) -> Indexer:
        """An indexer whose database lives in the project's cache, one file per endpoint."""
        d = config.home() / "index"
        d.mkdir(parents=True, exist_ok=True)
        name = chain.url.replace("://", "_").replace(":", "_").replace("/", "_")
        return cls(chain, d / f"{name}.sqlite")

    def close(self) -> None:
        self.db.close()

    def _save(self) -> None:
        with self.db:
            self.db.execute(
                "INSERT OR REPLACE INTO snapshot VALUES (1, ?, ?, ?)",
                (self.block_number, self.block_hash, self.state.to_bytes()),
            )

    def reset(self) -> None:
        """Forget everything: the next sync replays from genesis."""
        with self.db:
            self.db.execute("DELETE FROM snapshot")
        self.state, self.block_number, self.block_hash = State(self.params), 0, None

    def _still_on_chain(self) -> bool:
        if self.block_hash is None:
            return True
        try:
            return self.chain.block_hash(self.block_number) == self.block_hash
        except Exception:
            return False

    def finalized_number(self) -> int:
        head = self.chain.substrate.rpc_request("chain_getFinalizedHead", [])["result"]
        return self.chain.block_number(head)

    def sync(
        self, to: int | None = None, progress: Callable[[int, int], None] | None = None
    ) -> State:
        """Fold every finalized block up to ``to`` (default: the finalized head) into the state."""
        if not self._still_on_chain():
            self.reset()  # a restarted dev chain, or a different chain at the same URL
        target = self.finalized_number() if to is None else to
        sub = self.chain.substrate
        start = self.block_number + 1
        for n in range(start, target + 1):
            block_hash = self.chain.block_hash(n)
            events = self.chain.events(block_hash)
            if any(e["module"] == "System" and e["event"] == "Remarked" for e in events):
                with self.chain._lock:
                    extrinsics = sub.get_block(block_hash=block_hash)["extrinsics"]
                for ctx, raw in extract_calls(extrinsics, events, n, block_hash):
                    self.state.apply(ctx, raw)
            self.state.tick(n, block_hash)
            self.block_number, self.block_hash = n, block_hash
            if progress:
                progress(n - start + 1, target - start + 1)
            if (n - start + 1) % SNAPSHOT_EVERY == 0:
                self._save()
        if target >= start:
            self._save()
        return self.state

    def wait_for(self, block_number: int, timeout: float = 30.0) -> State:
        """Sync until ``block_number`` is folded in (it may not be finalized yet)."""
        deadline = time.monotonic() + timeout
        while self.finalized_number() < block_number and time.monotonic() < deadline:
            time.sleep(0.1)
        return self.sync(max(block_number, self.finalized_number()))


__all__ = ["Indexer", "extract_calls"]
