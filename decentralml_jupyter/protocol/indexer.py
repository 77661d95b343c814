"""The indexer: replays finalized blocks into the protocol `State` and keeps it in SQLite.

For each block it finds the protocol remarks that really executed (one per `System.Remarked`
event) and the value that really moved (transfer, dust and burn events: never a call tree,
which may hold calls that never ran), feeds them to the state extrinsic by extrinsic and
ticks the block. A snapshot after each sync lets it resume
without re-reading from genesis; a chain that no longer has the indexed block is re-indexed.

``from_block`` (``--from-block``, DFML_FROM_BLOCK) is the protocol's first block on a chain
with a history of its own: nothing before it is read or applied, so a first sync costs the
blocks since it, not since genesis. The index records it; an index built from another block
is refused (a UsageError saying which block it was built from and what to do),
never silently reused, because its state would be the fold of other blocks.

Blocks are read in chunks (`CHUNK`): the hashes of a chunk in one request, then its events
(and, for the few blocks that hold a remark, its extrinsics) pipelined on the one socket and
decoded with the chunk's one runtime (`Chain.read_blocks`). A chain object without those
methods (or a chunk spanning a runtime upgrade) is read block by block; substrate-interface
then decodes each block with its parent's runtime, so only a runtime upgrade within the first
chunk after ``from_block`` may have it ask the runtime version (never the contents) of block
``from_block - 1``.
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
from ..errors import ChainError, ChainNotReachable, UsageError
from .accounts import normalize_address
from .calls import is_protocol_remark
from .errors import SnapshotError
from .state import State
from .values import CallContext, ProtocolParams, Transfer

SNAPSHOT_EVERY = 500  # blocks; a long first sync survives an interruption
CHUNK = 256  # blocks read per round of requests (hashes in one, events pipelined)


def first_block(from_block: int | None) -> int:
    """The first block an indexer reads for ``from_block``: unset or 0 mean from genesis,
    whose first block with extrinsics is block 1."""
    return max(1, int(from_block or 0))


@dataclass(frozen=True)
class ExtrinsicValue:
    """What one extrinsic did, as its events say: the protocol remarks that executed (each
    with its context and bytes), the transfers that executed (in event order: the same tuple
    in every call's context) and value removed from accounts otherwise (dust, burns,
    reserves). ``index`` -1 stands for the block's own (non-extrinsic) events."""

    index: int
    calls: tuple[tuple[CallContext, bytes], ...]
    transfers: tuple[Transfer, ...]
    losses: tuple[tuple[str, int, int | None], ...]


def _args(call: dict) -> dict:
    return {a["name"]: a["value"] for a in call.get("call_args", [])}


def _address(value) -> str:
    if isinstance(value, dict):  # MultiAddress {"Id": ...}
        value = next(iter(value.values()))
    return normalize_address(value)


def _remarks(call: dict, index: int = 0) -> Iterator[tuple[object, int]]:
    """Every ``remark_with_event`` in a call tree with its position in its batch, executed or
    not: only used to recover the bytes of a remark its ``Remarked`` event names by hash."""
    module, fn = call["call_module"], call["call_function"]
    args = _args(call)
    if module == "System" and fn == "remark_with_event":
        yield args["remark"], index
    elif module == "Utility" and fn in ("batch", "batch_all", "force_batch"):
        for i, c in enumerate(args["calls"]):
            yield from _remarks(c, i)
    else:
        for value in args.values():  # as_multi, proxy, as_derivative, ...: any wrapped call
            if isinstance(value, dict) and "call_module" in value:
                yield from _remarks(value, index)


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


def _value_event(module: str, event: str, a: dict):
    """('transfer', Transfer) or ('loss', (account, amount, asset)) for an event that moved
    value, else None. Events are what the chain did; a call tree may not have run."""
    if module == "Balances":
        if event == "Transfer":
            return "transfer", Transfer(a["from"], a["to"], int(a["amount"]))
        if event in ("DustLost", "Slashed", "Withdraw", "Reserved"):
            who = a.get("account", a.get("who"))
            return "loss", (normalize_address(who), int(a["amount"]), None)
        if event == "ReserveRepatriated":
            return "loss", (normalize_address(a["from"]), int(a["amount"]), None)
    elif module == "Assets":
        if event == "Transferred":
            t = Transfer(a["from"], a["to"], int(a["amount"]), int(a["asset_id"]))
            return "transfer", t
        if event == "TransferredApproved":
            t = Transfer(a["owner"], a["destination"], int(a["amount"]), int(a["asset_id"]))
            return "transfer", t
        if event == "Burned":
            return "loss", (normalize_address(a["owner"]), int(a["balance"]), int(a["asset_id"]))
    return None


def _consistent(events: list[dict], extrinsics: list | None) -> bool:
    """Whether every remark event names an extrinsic the block's body has (a busy dev chain
    has been seen answering a block's events and body that do not fit)."""
    if extrinsics is None:
        return not needs_extrinsics(events)
    return all(
        e["extrinsic_index"] is None or e["extrinsic_index"] < len(extrinsics)
        for e in events
        if e["module"] == "System" and e["event"] == "Remarked"
    )


def needs_extrinsics(events: list[dict]) -> bool:
    """Whether a block's events name a remark, whose bytes only its extrinsics hold."""
    return any(e["module"] == "System" and e["event"] == "Remarked" for e in events)


def extract_values(
    extrinsics: list | None, events: list[dict], block_number: int, block_hash: str
) -> list[ExtrinsicValue]:
    """Per extrinsic (in order), what it did to the protocol and to balances, from its events.

    A protocol remark counts once per ``System.Remarked`` event (its bytes recovered from the
    call tree by hash, so an unexecuted copy elsewhere in the tree lends nothing but bytes);
    each call may be backed only by transfers whose events the same extrinsic emitted, from
    the remark's own origin. ``extrinsics`` may be None when no event is a ``Remarked``.
    """
    per: dict[int, dict[str, list]] = {}
    for e in events:
        idx = e["extrinsic_index"]
        idx = -1 if idx is None else idx
        slot = per.setdefault(idx, {"remarked": [], "transfers": [], "losses": []})
        a = e["attributes"] or {}
        if (e["module"], e["event"]) == ("System", "Remarked"):
            slot["remarked"].append(a)
            continue
        moved = _value_event(e["module"], e["event"], a)
        if moved is not None:
            kind, v = moved
            slot["transfers" if kind == "transfer" else "losses"].append(v)
    out = []
    for idx in sorted(per):
        slot = per[idx]
        transfers = tuple(t for t in slot["transfers"] if t.source != t.dest)
        calls = []
        if slot["remarked"] and idx >= 0 and extrinsics is not None:
            candidates = list(_remarks(extrinsics[idx].value["call"]))
            used: set[int] = set()
            for ev in slot["remarked"]:
                for n, (value, batch_index) in enumerate(candidates):
                    if n in used:
                        continue
                    raw = _remark_bytes(value, ev["hash"])
                    if raw is None:
                        continue
                    used.add(n)
                    if is_protocol_remark(raw):
                        sender = normalize_address(ev["sender"])
                        ctx = CallContext(
                            block_number, block_hash, idx, batch_index, sender, transfers
                        )
                        calls.append((ctx, raw))
                    break
        if calls or transfers or slot["losses"]:
            out.append(ExtrinsicValue(idx, tuple(calls), transfers, tuple(slot["losses"])))
    return out


def extract_calls(extrinsics: list, events: list[dict], block_number: int, block_hash: str):
    """(CallContext, remark bytes) for every protocol remark that executed in a block."""
    return [
        c for x in extract_values(extrinsics, events, block_number, block_hash) for c in x.calls
    ]


def fold_block(state: State, values: list[ExtrinsicValue], block_number: int, block_hash: str):
    """Apply one block's extracted values to ``state`` and tick it."""
    for x in values:
        for ctx, raw in x.calls:
            state.apply(ctx, raw)
        state.close_extrinsic(block_number, x.index, x.transfers, x.losses)
    state.tick(block_number, block_hash)


class Indexer:
    """Follows one chain and keeps its protocol `State` in a SQLite file.

    ``db_path`` None keeps it in memory (a replay from ``from_block`` on every start).
    ``from_block``: the protocol's first block on this chain (None: from genesis); no block
    before it is ever requested. A database built from another block raises UsageError.
    """

    def __init__(
        self,
        chain: Chain,
        db_path: str | Path | None = None,
        params: ProtocolParams | None = None,
        *,
        from_block: int | None = None,
        save_every: float = 0.0,
    ):
        self.chain = chain
        self.params = params
        # seconds between snapshots of a sync that folded blocks (0: after every such sync).
        # An agent following the head saves every few seconds, not on every block: a
        # snapshot is the whole state, which a round of a thousand clients makes large
        self.save_every = save_every
        self._saved_at = float("-inf")
        self._unsaved = False
        self.from_block = first_block(from_block)
        self.path = str(db_path) if db_path else None
        # used by one thread at a time, not always the one that opened it (a Session's
        # callers take turns on its lock; a widget polls from its own thread)
        self.db = sqlite3.connect(self.path or ":memory:", check_same_thread=False)
        self.db.execute(
            "CREATE TABLE IF NOT EXISTS snapshot (id INTEGER PRIMARY KEY CHECK (id = 1), "
            "block_number INTEGER, block_hash TEXT, state BLOB)"
        )
        self.db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT)")
        self.state = State(params)
        self.block_number = self.from_block - 1  # last block folded into the state
        self.block_hash: str | None = None
        row = self.db.execute("SELECT block_number, block_hash, state FROM snapshot").fetchone()
        state = None
        if row:
            try:
                state = State.from_bytes(row[2])
            except SnapshotError:  # written by another version of the protocol: replay
                state = None
        if state is not None:
            stored = self.db.execute("SELECT value FROM meta WHERE key = 'from_block'").fetchone()
            built_from = int(stored[0]) if stored else 1  # indexes older than the option: 1
            if built_from != self.from_block:
                self.db.close()
                raise _mismatch(self.path, built_from, self.from_block)
            self.block_number, self.block_hash, self.state = row[0], row[1], state
        with self.db:  # an empty or unreadable index is rebuilt from our first block
            self.db.execute(
                "INSERT OR REPLACE INTO meta VALUES ('from_block', ?)", (str(self.from_block),)
            )

    @classmethod
    def for_chain(cls, chain: Chain, from_block: int | None = None) -> Indexer:
        """An indexer whose database lives in the project's cache: one file per endpoint and
        first block, so that switching ``from_block`` (a notebook's `%config`) uses an index
        of its own instead of tripping over another's."""
        d = config.home() / "index"
        d.mkdir(parents=True, exist_ok=True)
        name = chain.url.replace("://", "_").replace(":", "_").replace("/", "_")
        first = first_block(from_block)
        suffix = "" if first == 1 else f"-from-{first}"
        return cls(chain, d / f"{name}{suffix}.sqlite", from_block=first)

    def close(self) -> None:
        if self._unsaved:
            self._save()
        self.db.close()

    def _save(self) -> None:
        with self.db:
            self.db.execute(
                "INSERT OR REPLACE INTO snapshot VALUES (1, ?, ?, ?)",
                (self.block_number, self.block_hash, self.state.to_bytes()),
            )
        self._saved_at, self._unsaved = time.monotonic(), False

    def reset(self) -> None:
        """Forget everything: the next sync replays from the first block."""
        with self.db:
            self.db.execute("DELETE FROM snapshot")
        self._unsaved = False
        self.state, self.block_hash = State(self.params), None
        self.block_number = self.from_block - 1

    def _still_on_chain(self) -> bool:
        """False only on proof that the indexed history is not this chain's: the chain answers
        that its block at our height has another hash, or that it has none (a restarted dev
        chain, another chain at the same URL). An error asking is no proof: it raises, and
        the index is kept for when the chain answers again."""
        if self.block_hash is None:
            return True
        try:
            current = self.chain.block_hash(self.block_number)
        except Exception as exc:  # noqa: BLE001 - websocket and RPC errors vary in type
            raise ChainNotReachable(
                f"cannot check indexed block {self.block_number} at {self.chain.url}: {exc}",
                hint="the index is kept; it resumes when the chain answers again",
            ) from None
        return current == self.block_hash

    def finalized_number(self) -> int:
        return self.chain.finalized_number()

    def sync(
        self,
        to: int | None = None,
        progress: Callable[[int, int], None] | None = None,
        *,
        check: bool = True,
    ) -> State:
        """Fold every finalized block up to ``to`` (default: the finalized head) into the state.

        ``check`` first asks the chain whether the indexed block is still its own (one
        request); a caller that knows the connection and the chain are the ones it indexed
        (a `Session` following heads on one socket) may skip it. ``progress(done, total)``
        is called after each block."""
        if check and not self._still_on_chain():
            self.reset()  # a restarted dev chain, or a different chain at the same URL
        target = self.finalized_number() if to is None else to
        start = self.block_number + 1  # never below from_block: block_number starts there
        total = target - start + 1
        n = start
        while n <= target:
            end = min(target, n + CHUNK - 1)
            blocks = self._read_chunk(n, end)
            complete = len(blocks) == end - n + 1
            for block_hash, events, extrinsics in blocks:
                values = extract_values(extrinsics, events, n, block_hash)
                fold_block(self.state, values, n, block_hash)
                self.block_number, self.block_hash = n, block_hash
                if progress:
                    progress(n - start + 1, total)
                if (n - start + 1) % SNAPSHOT_EVERY == 0:
                    self._save()
                n += 1
            if not complete:  # the chain has no block n (yet): stop at the last it has
                break
        if self.block_number >= start:
            self._unsaved = True
            if time.monotonic() - self._saved_at >= self.save_every:
                self._save()
        return self.state

    def _read_chunk(self, start: int, end: int) -> list[tuple[str, list[dict], list | None]]:
        """(hash, events, extrinsics or None) of blocks ``start..end``, as far as the chain
        has them: in one round of requests where the chain allows, else block by block."""
        chain = self.chain
        if hasattr(chain, "block_hashes"):
            hashes = chain.block_hashes(start, end)
        else:
            hashes = [chain.block_hash(n) for n in range(start, end + 1)]
        if None in hashes:
            hashes = hashes[: hashes.index(None)]
        if not hashes:
            return []
        # the parent of the first block, only if it is ours (never a block before from_block)
        parent = self.block_hash if self.block_number == start - 1 else None
        if hasattr(chain, "read_blocks"):
            read = chain.read_blocks(hashes, parent_hash=parent, want_extrinsics=needs_extrinsics)
            if read is not None:
                return [
                    (h, ev, xs) if _consistent(ev, xs) else self._read_one(h)
                    for h, (ev, xs) in zip(hashes, read, strict=True)
                ]
        # a chunk across a runtime upgrade, or a minimal chain
        return [self._read_one(block_hash) for block_hash in hashes]

    def _read_one(self, block_hash: str) -> tuple[str, list[dict], list | None]:
        """One block's events and (when they name a remark) extrinsics, by themselves; a
        ChainError if the chain's answers still do not fit together (events naming an
        extrinsic the block does not have): the block is read again at the next sync."""
        events = self.chain.events(block_hash)
        extrinsics = self.chain.extrinsics(block_hash) if needs_extrinsics(events) else None
        if not _consistent(events, extrinsics):
            raise ChainError(
                f"the chain's events of block {block_hash} name extrinsics its body lacks",
                hint="the index stops before that block and reads it again at the next sync",
            )
        return block_hash, events, extrinsics

    def wait_for(self, block_number: int, timeout: float = 30.0) -> State:
        """Sync until ``block_number`` is folded in (it may not be finalized yet). A block
        before the protocol's first block is never applied: UsageError says so."""
        if block_number < self.from_block:
            raise UsageError(
                f"block {block_number} is before the protocol's first block {self.from_block} "
                "on this chain: it was included, but the protocol ignores it",
                hint="the protocol starts at --from-block (DFML_FROM_BLOCK); send calls from "
                f"block {self.from_block} on, or start it earlier",
            )
        deadline = time.monotonic() + timeout
        while self.finalized_number() < block_number and time.monotonic() < deadline:
            time.sleep(0.1)
        return self.sync(max(block_number, self.finalized_number()))


def _mismatch(path: str | None, built_from: int, asked: int) -> UsageError:
    def option(first: int) -> str:
        return "no --from-block" if first == 1 else f"--from-block {first}"

    return UsageError(
        f"the index {path} was built from block {built_from}, not from block {asked}: "
        "its state is the fold of other blocks, so it is not reused",
        hint=f"use {option(built_from)} (DFML_FROM_BLOCK) to resume it, or delete {path} "
        f"to index again from block {asked}",
    )


__all__ = [
    "CHUNK",
    "ExtrinsicValue",
    "Indexer",
    "extract_calls",
    "extract_values",
    "first_block",
    "fold_block",
]
