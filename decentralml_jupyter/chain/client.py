"""`Chain`: the one facade over substrate-interface that every upper layer uses.

It turns the library's exceptions into DfmlErrors that say what to do, returns frozen
`Receipt`s for transactions, and keeps dev keys off chains that are not dev chains.

The token (symbol, decimals) and the address format come from the chain's own properties
(``system_properties``: tokenSymbol, tokenDecimals, ss58Format), so addresses show as the
chain shows them; a chain that declares no ss58Format gets the generic Substrate format 42.
The protocol's state spells every account in format 42 whatever the chain shows
(`protocol.accounts.normalize_address` accepts any format).

`read_blocks` reads many blocks' events in one round of requests (pipelined on the socket)
and decodes them with the one runtime they share: what the indexer catches up with.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from substrateinterface import Keypair, SubstrateInterface
from substrateinterface.base import ExtrinsicReceipt
from substrateinterface.exceptions import SubstrateRequestException
from websocket import WebSocketException

from .. import config
from ..errors import (
    ChainError,
    ChainNotReachable,
    DispatchFailed,
    KeyLoadError,
    TransactionRejected,
    UsageError,
)
from .devchain import DEV_NAMES, SS58_FORMAT
from .keys import is_dev_uri, load_keypair


@dataclass(frozen=True)
class Receipt:
    """What happened to a submitted transaction."""

    block_hash: str
    block_number: int
    extrinsic_index: int
    success: bool
    error: str | None
    fee: int = 0
    events: tuple[dict, ...] = field(default=(), repr=False)

    def to_json(self) -> dict:
        return {
            "block_hash": self.block_hash,
            "block_number": self.block_number,
            "extrinsic_index": self.extrinsic_index,
            "success": self.success,
            "error": self.error,
        }

    def events_of(self, module: str, event: str | None = None) -> list[dict]:
        return [
            e
            for e in self.events
            if e["module"] == module and (event is None or e["event"] == event)
        ]


@dataclass(frozen=True)
class Balance:
    address: str
    free: int
    reserved: int

    def to_json(self) -> dict:
        return {"address": self.address, "free": self.free, "reserved": self.reserved}


@dataclass(frozen=True)
class Block:
    number: int
    hash: str
    events: tuple[dict, ...]


def _event_dict(record) -> dict:
    value = record.value
    ev = value["event"]
    phase = value.get("phase")
    ext = value.get("extrinsic_idx")
    return {
        "module": ev["module_id"],
        "event": ev["event_id"],
        "attributes": ev["attributes"],
        "extrinsic_index": ext,
        "phase": phase if isinstance(phase, str) else next(iter(phase), None),
    }


def _fee(events: Sequence[dict]) -> int:
    """An extrinsic's fee from its events, as substrate-interface reads it: the
    TransactionFeePaid event's ``actual_fee``, else what Treasury and Balances deposits took."""

    def attr(e: dict, name: str) -> int:
        a = e["attributes"]
        return int(a.get(name, 0)) if isinstance(a, dict) else 0

    for e in events:
        if (e["module"], e["event"]) == ("TransactionPayment", "TransactionFeePaid"):
            return attr(e, "actual_fee")
    return sum(
        attr(e, "value") if e["module"] == "Treasury" else attr(e, "amount")
        for e in events
        if (e["module"], e["event"]) in {("Treasury", "Deposit"), ("Balances", "Deposit")}
    )


def _rejection_reason(exc: SubstrateRequestException) -> str:
    info = exc.args[0] if exc.args else str(exc)
    if isinstance(info, dict):
        msg, data = str(info.get("message", "")), info.get("data")
        info = f"{msg}: {data}" if data else msg
    info = str(info)
    if info.startswith("{"):
        try:  # Chopsticks reports validity errors as JSON, e.g. {"invalid":{"payment":null}}
            parsed = json.loads(info)
        except ValueError:
            return info
        if isinstance(parsed, dict):
            return "; ".join(
                f"{kind} transaction ({', '.join(detail) if isinstance(detail, dict) else detail})"
                for kind, detail in parsed.items()
            )
    return info


_REJECTION_HINTS = {
    "payment": "the signer cannot pay the fee: fund the account (dfml account transfer) first",
    "badproof": "the signature does not match the signer: sign with the right key",
    "stale": "the nonce was already used: wait for the earlier transaction and retry",
    "future": "the nonce is ahead of the chain: wait for pending transactions",
}


# substrate-interface keeps its type registry per process and breaks when two threads decode
# at once ("Decoder class for Compact<u32> not found"), so every Chain in a process shares one
# lock: a notebook's dashboard thread and its magics can then use the chain side by side.
_PROCESS_LOCK = threading.RLock()
_log = logging.getLogger("dfml.chain")
FULL_BLOCK_RETRIES = 20  # submissions of an extrinsic a full dev chain block dropped
RUNTIME_RECHECK_S = 10.0  # composing calls: how long the head's runtime is taken as known


class _MetadataCache:
    """Decoded runtime metadata shared by every connection of this process to one endpoint
    (substrate-interface's ``cache_region`` interface). Decoding it costs about a second of
    CPU, which every CLI call, magic and agent connection would otherwise pay again."""

    _store: dict[tuple[str, str], object] = {}

    def __init__(self, url: str):
        self.url = url

    def get(self, key: str):
        return self._store.get((self.url, key))

    def set(self, key: str, value) -> None:
        self._store[(self.url, key)] = value


class _Substrate(SubstrateInterface):
    """SubstrateInterface whose genesis hash is the one the runtime checks signatures against.

    Chopsticks, once resumed from its database, answers chain_getBlockHash(0) with a wrong hash,
    so transactions signed for it fail with badProof. The runtime's own System.BlockHash(0) is
    the genesis hash on every Substrate chain, so we read that instead.
    """

    _genesis_hash: str | None = None

    # One address format per connection: the chain's declared ss58Format (system_properties),
    # set by `Chain`, whatever the runtime's SS58Prefix constant says (substrate-interface
    # applies that one on every runtime change; 2 on the dev chain's Asset Hub runtime, whose
    # properties declare none, so it shows the generic format 42).
    _dfml_ss58: int = SS58_FORMAT

    @property
    def ss58_format(self) -> int:
        return self._dfml_ss58

    @ss58_format.setter
    def ss58_format(self, value) -> None:
        if getattr(self, "runtime_config", None):
            self.runtime_config.ss58_format = self._dfml_ss58

    def use_ss58_format(self, value: int) -> None:
        self._dfml_ss58 = value
        self.ss58_format = value

    def get_block_hash(self, block_id: int = None) -> str:
        if block_id != 0:
            return super().get_block_hash(block_id)
        if self._genesis_hash is None:
            from substrateinterface.utils.hasher import xxh64, xxh128

            zero = (0).to_bytes(4, "little")
            key = xxh128(b"System") + xxh128(b"BlockHash") + xxh64(zero) + zero
            stored = self.rpc_request("state_getStorage", ["0x" + bytes(key).hex()])["result"]
            self._genesis_hash = stored or super().get_block_hash(0)
        return self._genesis_hash


class Chain:
    """A connection to a Substrate chain (the dev chain or any endpoint with the same pallets)."""

    def __init__(
        self, url: str | None = None, *, timeout: float = 30.0, ss58_format: int | None = None
    ):
        """``ss58_format`` overrides the chain's own address format (None: its properties')."""
        self.url = url or config.default_url()
        try:
            with _PROCESS_LOCK:
                self.substrate = _Substrate(
                    url=self.url,
                    # the node speaks JSON (ASCII): websocket-client's pure-Python UTF-8
                    # check of every frame would cost more than the request itself
                    ws_options={"timeout": timeout, "skip_utf8_validation": True},
                    cache_region=_MetadataCache(self.url),
                )
                self.substrate.init_runtime()
            props = self.substrate.properties or {}
        except (ConnectionError, OSError, TimeoutError) as exc:
            raise ChainNotReachable(
                f"dev chain not reachable at {self.url}: {exc}",
                hint="start one with: dfml chain up (or pass --url of a running chain)",
            ) from None
        except Exception as exc:  # websocket errors come in many classes
            raise ChainNotReachable(
                f"could not connect to a chain at {self.url}: {exc}",
                hint="start one with: dfml chain up (or pass --url of a running chain)",
            ) from None
        self.properties = dict(props)
        self.ss58_format, self.token_symbol, self.token_decimals = token_properties(props)
        if ss58_format is not None:
            self.ss58_format = int(ss58_format)
        self.substrate.use_ss58_format(self.ss58_format)
        self._lock = _PROCESS_LOCK
        self._is_dev: bool | None = None
        self._existential: int | None = None
        # (module, storage, address) -> its storage key (see _read_many)
        self._storage_keys: dict[tuple[str, str, str], Any] = {}
        self._decoded_events: dict[tuple[int, str], list[dict]] = {}  # (spec, raw) -> events
        self._event_decoders: dict[int, tuple[Any, int]] = {}  # spec -> (EventDecoder, type)
        self._runtime_checked = time.monotonic()  # init_runtime() just ran
        self._runtime_block = self.substrate.block_hash  # the block whose runtime composes
        self._has: dict[tuple[int, str, str], bool] = {}  # (spec, module, call) -> exists

    def token(self) -> dict:
        """The chain's token and address format: ``{"symbol", "decimals", "ss58_format"}``."""
        return {
            "symbol": self.token_symbol,
            "decimals": self.token_decimals,
            "ss58_format": self.ss58_format,
        }

    # -- connection -------------------------------------------------------------------------

    def close(self) -> None:
        self.substrate.close()

    def reconnect(self) -> None:
        """Open the websocket again after the chain went away (a restart, a crash): the
        runtime metadata stays; raises ChainNotReachable while nothing answers."""
        with self._lock:
            try:
                self.substrate.connect_websocket()
            except Exception as exc:  # noqa: BLE001 - socket errors come in many classes
                raise ChainNotReachable(
                    f"chain at {self.url} still not reachable: {exc}",
                    hint="start it again (dfml chain up / devnet up); agents retry by themselves",
                ) from None

    def __enter__(self) -> Chain:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _rpc(self, method: str, params: list | None = None):
        with self._lock:
            reply = self.substrate.rpc_request(method, params or [])
        return reply["result"]

    @property
    def is_dev(self) -> bool:
        """A dev chain (Chopsticks, or a node whose chain type is Development/Local)."""
        if self._is_dev is None:
            methods = self._rpc("rpc_methods").get("methods", [])
            chain_type = None
            if "system_chainType" in methods:
                chain_type = self._rpc("system_chainType")
            self._is_dev = "dev_newBlock" in methods or chain_type in ("Development", "Local")
        return self._is_dev

    def new_blocks(self, count: int = 1) -> int:
        """Build ``count`` empty blocks now (dev chains only); return the new head number."""
        if not self.is_dev:
            raise UsageError("only a dev chain builds blocks on request")
        # a few blocks per call: each costs a runtime execution, and one long call would run
        # into the websocket timeout on a busy machine
        left = count
        while left > 0:
            step = min(left, 4)
            self._rpc("dev_newBlock", [{"count": step}])
            left -= step
        return self.block_number()

    def block_number(self, block_hash: str | None = None) -> int:
        with self._lock:
            return self.substrate.get_block_number(block_hash or self.substrate.get_chain_head())

    def head(self) -> str:
        with self._lock:
            return self.substrate.get_chain_head()

    def block_hash(self, number: int) -> str:
        with self._lock:
            return self.substrate.get_block_hash(number)

    def block_hashes(self, start: int, end: int) -> list[str | None]:
        """The hashes of blocks ``start..end`` (None for a block the chain does not have), in
        one request: ``chain_getBlockHash`` takes a list of numbers."""
        numbers = list(range(start, end + 1))
        if not numbers:
            return []
        if 0 in numbers:  # the genesis hash has its own way (see _Substrate.get_block_hash)
            return [self.block_hash(0), *self.block_hashes(1, end)]
        with self._lock:
            try:
                reply = self.substrate.rpc_request("chain_getBlockHash", [numbers])
            except SubstrateRequestException:
                reply = None
        result = reply.get("result") if isinstance(reply, dict) else None
        if isinstance(result, list) and len(result) == len(numbers):
            return result
        return [self.block_hash(n) for n in numbers]  # a node that takes one number at a time

    def _rpc_many(self, calls: Sequence[tuple[str, list]], window: int = 32) -> list:
        """The results of ``calls`` ((method, params), ...) in order, pipelined on the one
        websocket: up to ``window`` requests in flight, so a round of N requests costs about
        one round trip instead of N. Holds the chain lock; raises ChainError if any failed
        (after reading every reply, so that none is left on the socket)."""
        transport = getattr(self.substrate, "transport", None)
        ws = getattr(transport, "websocket", None)
        if ws is None or not hasattr(ws, "recv"):  # not a websocket: one request at a time
            out = []
            for method, params in calls:
                with self._lock:
                    reply = self.substrate.rpc_request(method, params)
                out.append(reply.get("result"))
            return out
        with self._lock:
            sub = self.substrate
            first = sub.request_id
            sub.request_id += len(calls)
            # replies that are not ours go where substrate-interface looks for its own
            queue = getattr(transport, "_WebsocketTransport__rpc_message_queue", None)
            results: list = [None] * len(calls)
            failed: list[str] = []
            sent = received = 0
            while received < len(calls):
                while sent < len(calls) and sent - received < window:
                    method, params = calls[sent]
                    payload = {"jsonrpc": "2.0", "id": first + sent, "method": method}
                    ws.send(json.dumps({**payload, "params": params}))
                    sent += 1
                message = json.loads(ws.recv())
                rid = message.get("id") if isinstance(message, dict) else None
                if isinstance(rid, int) and first <= rid < first + len(calls):
                    received += 1
                    if "error" in message:
                        failed.append(f"{calls[rid - first][0]}: {message['error']}")
                    else:
                        results[rid - first] = message.get("result")
                elif queue is not None:
                    queue.append(message)
        if failed:
            raise ChainError(f"{len(failed)} request(s) to {self.url} failed: {failed[0]}")
        return results

    def read_blocks(
        self,
        hashes: Sequence[str],
        *,
        parent_hash: str | None = None,
        want_extrinsics: Callable[[list[dict]], bool] | None = None,
    ) -> list[tuple[list[dict], list | None]] | None:
        """(events, extrinsics or None) of consecutive blocks ``hashes``, fetched in one
        pipelined round and decoded with the one runtime they share; the extrinsics only of
        blocks whose events ``want_extrinsics``. None when a runtime upgrade falls among them
        (read those with `events` and `extrinsics`, block by block).

        A block's events are written by its parent's runtime: ``parent_hash`` is the first
        block's parent, None when it must not be read (a block before ``--from-block``); then
        the first block's own runtime stands for it (the same unless that very block enacts an
        upgrade). Identical events (an idle chain's blocks) are decoded once."""
        from scalecodec.base import ScaleBytes
        from substrateinterface.utils.hasher import xxh128

        if not hashes:
            return []
        key = "0x" + (xxh128(b"System") + xxh128(b"Events")).hex()
        first = parent_hash or hashes[0]
        last = hashes[-2] if len(hashes) > 1 else first  # the last block's parent
        probes = [first] if last == first else [first, last]
        with self._lock:
            replies = self._rpc_many(
                [("state_getRuntimeVersion", [h]) for h in probes]
                + [("state_getStorage", [key, h]) for h in hashes]
            )
            specs = {r["specVersion"] for r in replies[: len(probes)]}
            raws = replies[len(probes) :]
            if len(specs) != 1:
                return None
            spec = specs.pop()
            sub = self.substrate
            if sub.runtime_version != spec:
                if len(hashes) < 2:
                    return None
                sub.init_runtime(block_hash=hashes[1])  # its parent, hashes[0], has ``spec``
                if sub.runtime_version != spec:
                    return None
            events = [self._decode_events(spec, raw, ScaleBytes) for raw in raws]
            wanted = [i for i, ev in enumerate(events) if want_extrinsics and want_extrinsics(ev)]
            extrinsics: dict[int, list] = {}
            if wanted:
                blocks = self._rpc_many([("chain_getBlock", [hashes[i]]) for i in wanted])
                extrinsic_cls = sub.runtime_config.get_decoder_class("Extrinsic")
                strict = sub.config.get("strict_scale_decode")
                for i, block in zip(wanted, blocks, strict=True):
                    decoded = []
                    for data in block["block"]["extrinsics"]:
                        x = extrinsic_cls(
                            data=ScaleBytes(data),
                            metadata=sub.metadata,
                            runtime_config=sub.runtime_config,
                        )
                        x.decode(check_remaining=strict)
                        decoded.append(x)
                    extrinsics[i] = decoded
        return [(ev, extrinsics.get(i)) for i, ev in enumerate(events)]

    def _decode_events(self, spec: int, raw: str | None, scale_bytes) -> list[dict]:
        if raw is None:  # no events stored: the storage item's default, an empty list
            return []
        cached = self._decoded_events.get((spec, raw))
        if cached is None:
            sub = self.substrate
            item = sub.metadata.get_metadata_pallet("System").get_storage_function("Events")
            cached = self._decode_events_fast(spec, raw, item)
            if cached is None:
                obj = sub.runtime_config.create_scale_object(
                    type_string=item.get_value_type_string(),
                    data=scale_bytes(raw),
                    metadata=sub.metadata,
                )
                obj.decode(check_remaining=sub.config.get("strict_scale_decode"))
                cached = [_event_dict(e) for e in obj.elements]
            if len(self._decoded_events) >= 256:
                self._decoded_events.clear()
            self._decoded_events[(spec, raw)] = cached
        return list(cached)

    def _decode_events_fast(self, spec: int, raw: str, item) -> list[dict] | None:
        """The events read by `events.EventDecoder` (the same dicts, ~50x faster than
        scalecodec: a block of a thousand proxied updates took a second of every indexing
        process's CPU); None where it cannot read them (scalecodec then does)."""
        from .events import EventDecoder, Unsupported

        found = self._event_decoders.get(spec)
        try:
            if found is None:
                sub = self.substrate
                registry = sub.metadata.portable_registry.value["types"]
                found = (
                    EventDecoder(registry, sub.runtime_config.ss58_format),
                    item.value["type"]["Plain"],
                )
                self._event_decoders[spec] = found
            return found[0].decode(bytes.fromhex(raw[2:]), found[1])
        except (Unsupported, LookupError, TypeError, ValueError, AttributeError) as exc:
            _log.debug("events of spec %s read by scalecodec: %s", spec, exc)
            return None

    def runtime(self) -> dict:
        v = self._rpc("state_getRuntimeVersion")
        return {"spec_name": v["specName"], "spec_version": v["specVersion"]}

    # -- keys and accounts -----------------------------------------------------------------

    def keypair(self, key: str | Keypair | None = None, *, force: bool = False) -> Keypair:
        """The signing key for ``key`` (default DFML_KEY or //Alice).

        Dev keys are refused on a chain that is not a dev chain unless ``force``: anyone can
        sign with them.
        """
        if isinstance(key, Keypair):
            return key
        key = key or config.default_key()
        key = _dev_name_uri(key) or key
        if is_dev_uri(key) and not force and not self.is_dev:
            raise KeyLoadError(
                f"refusing dev key {key} on {self.url}, which is not a dev chain",
                hint="use your own key (--key MNEMONIC or a key file), or force it if you must",
            )
        return load_keypair(key, ss58_format=self.ss58_format)

    def address(self, who: str | Keypair) -> str:
        """An SS58 address from an address, a dev name (Alice, Dev3), or a key spec."""
        return address_of(who, self.ss58_format)

    def balance(self, who: str | Keypair) -> Balance:
        addr = self.address(who)
        with self._lock:
            info = self.substrate.query("System", "Account", [addr]).value
        return Balance(addr, int(info["data"]["free"]), int(info["data"]["reserved"]))

    def balances(self, whos: Sequence[str | Keypair]) -> list[Balance]:
        """The balances of several accounts, read in one request (see ``_read_many``)."""
        addrs = [self.address(w) for w in whos]
        out = []
        for a, value in zip(addrs, self._read_many("System", "Account", addrs), strict=True):
            if value is None:  # an account that does not exist holds nothing
                out.append(Balance(a, 0, 0))
            else:
                out.append(Balance(a, int(value["data"]["free"]), int(value["data"]["reserved"])))
        return out

    def proxies_of(self, reals: Sequence[str]) -> dict[str, list[str]]:
        """The accounts that may act for each of ``reals``, read in one request."""
        addrs = [self.address(r) for r in reals]
        out = {}
        for a, value in zip(addrs, self._read_many("Proxy", "Proxies", addrs), strict=True):
            entries = value[0] if value else []
            out[a] = [self.address(e["delegate"]) for e in entries]
        return out

    def _read_many(self, module: str, storage: str, accounts: list[str]) -> list[Any]:
        """One storage map's decoded values (None where absent) for several accounts, read in
        one request (``state_queryStorageAt``). Each storage key is made once per connection
        (making one asks the node for its runtime version), so a repeated read is that one
        request and the decoding."""
        from scalecodec.base import ScaleBytes

        if not accounts:
            return []
        with self._lock:
            keys = []
            for a in accounts:
                key = self._storage_keys.get((module, storage, a))
                if key is None:
                    key = self.substrate.create_storage_key(module, storage, [a])
                    self._storage_keys[(module, storage, a)] = key
                keys.append(key)
            reply = self.substrate.rpc_request("state_queryStorageAt", [[k.to_hex() for k in keys]])
            if "error" in reply:
                raise ChainError(f"state_queryStorageAt failed: {reply['error'].get('message')}")
            changes = {k: v for group in reply["result"] for k, v in group["changes"]}
            out = []
            for key in keys:
                raw = changes.get(key.to_hex())
                out.append(None if raw is None else key.decode_scale_value(ScaleBytes(raw)).value)
        return out

    def record_requests(self) -> list[dict]:
        """Every JSON-RPC request this connection sends from now on (pipelined ones too), as
        the list returned, which grows: for measurements and tests that count requests."""
        ws = self.substrate.transport.websocket
        sent: list[dict] = []
        send = ws.send

        def recording(payload, *args, **kwargs):
            sent.append(json.loads(payload))
            return send(payload, *args, **kwargs)

        ws.send = recording
        return sent

    def existential_deposit(self) -> int:
        """The native token's existential deposit (a runtime constant: read once)."""
        if self._existential is None:
            with self._lock:
                value = self.substrate.get_constant("Balances", "ExistentialDeposit").value
            self._existential = int(value)
        return self._existential

    def nonce(self, who: str | Keypair) -> int:
        with self._lock:
            return self.substrate.get_account_nonce(self.address(who))

    # -- calls ------------------------------------------------------------------------------

    def call(self, module: str, function: str, params: dict | None = None):
        """Compose a call, with a clear error for an unknown pallet, call or parameter."""
        if (module, function) == ("Balances", "transfer_allow_death") and not self._has_call(
            module, function
        ):
            function = "transfer"  # its name before the rename (older runtimes)
        with self._lock:
            try:
                # substrate-interface's compose_call asks the chain for its head's runtime
                # (three requests) before every call: a host composing a thousand proxied
                # updates waited seconds on a busy dev chain for answers that do not change.
                # The runtime is checked at most every RUNTIME_RECHECK_S seconds instead.
                self._current_runtime()
                sub = self.substrate
                composed = sub.runtime_config.create_scale_object(
                    type_string="Call", metadata=sub.metadata
                )
                composed.encode(
                    {"call_module": module, "call_function": function, "call_args": params or {}}
                )
                return composed
            except ValueError as exc:
                raise UsageError(
                    f"cannot compose {module}.{function}: {exc}",
                    hint="check the pallet and call names and their parameters in the metadata",
                ) from None
            except Exception as exc:
                if is_connection_error(exc):  # composing may ask the chain (metadata, weight)
                    raise ChainNotReachable(
                        f"the chain at {self.url} did not answer while composing "
                        f"{module}.{function}: {exc}",
                        hint="check that the chain runs and is reachable; agents retry",
                    ) from None
                raise UsageError(
                    f"bad parameters for {module}.{function}: {exc}",
                    hint="check the parameter names and types in the chain's metadata",
                ) from None

    def _current_runtime(self) -> None:
        """The head's runtime (metadata and types) for composing calls, asked of the chain
        when not asked for ``RUNTIME_RECHECK_S`` seconds (a runtime upgrade is then seen
        within that long; signing asks the chain every time)."""
        now = time.monotonic()
        sub = self.substrate
        if (
            now - self._runtime_checked >= RUNTIME_RECHECK_S
            or sub.metadata is None
            # another read loaded another block's runtime (the indexer reading history)
            or sub.block_hash != self._runtime_block
        ):
            sub.init_runtime()
            self._runtime_checked, self._runtime_block = now, sub.block_hash

    def transfer_call(self, dest: str, amount: int, keep_alive: bool = True):
        if not isinstance(amount, int) or amount <= 0:
            raise UsageError(f"amount must be a positive integer, got {amount!r}")
        fn = "transfer_keep_alive" if keep_alive else "transfer_allow_death"
        return self.call("Balances", fn, {"dest": self.address(dest), "value": amount})

    def remark_call(self, data: bytes):
        return self.call("System", "remark_with_event", {"remark": "0x" + bytes(data).hex()})

    def batch_all_call(self, calls: Sequence):
        return self.call("Utility", "batch_all", {"calls": list(calls)})

    def batch_call(self, calls: Sequence):
        """Not atomic: the calls before a failing one stay done, the ones after it do not run."""
        return self.call("Utility", "batch", {"calls": list(calls)})

    # -- proxies: one account signing for others (a host running many simulated workers) ----

    def proxy_call(self, real: str, call):
        """``call`` dispatched with ``real``'s origin; the signer must be its proxy."""
        return self.call(
            "Proxy", "proxy", {"real": self.address(real), "force_proxy_type": None, "call": call}
        )

    def add_proxy_call(self, delegate: str):
        """Let ``delegate`` act for the signer in everything (proxy type Any, no delay)."""
        return self.call(
            "Proxy",
            "add_proxy",
            {"delegate": self.address(delegate), "proxy_type": "Any", "delay": 0},
        )

    def proxies(self, real: str) -> list[str]:
        """The accounts that may act for ``real``."""
        return self.proxies_of([real])[self.address(real)]

    def estimate_fee(self, key, call) -> int:
        kp = self.keypair(key)
        with self._lock:
            info = self.substrate.get_payment_info(call, kp)
        return int(info["partialFee"])

    # -- submission -------------------------------------------------------------------------

    def sign(self, key, call, *, nonce: int | None = None):
        kp = self.keypair(key)
        with self._lock:
            return self.substrate.create_signed_extrinsic(call, kp, nonce=nonce)

    def submit(self, key, call, *, check: bool = True, nonce: int | None = None) -> Receipt:
        """Sign, submit and wait for inclusion; raise DispatchFailed if the call failed."""
        return self.submit_extrinsic(self.sign(key, call, nonce=nonce), check=check)

    def submit_nowait(self, extrinsic) -> str:
        """Hand a signed extrinsic to the chain's pool without waiting; its hash."""
        try:
            return self._rpc("author_submitExtrinsic", [str(extrinsic.data)])
        except SubstrateRequestException as exc:
            raise TransactionRejected(
                f"the chain rejected the transaction: {_rejection_reason(exc)}",
                "nothing was changed on chain; fix the transaction and resubmit",
            ) from None

    def submit_extrinsic(self, extrinsic, *, check: bool = True) -> Receipt:
        with self._lock:
            try:
                raw = self._submit_and_watch(extrinsic)
            except SubstrateRequestException as exc:
                reason = _rejection_reason(exc)
                low = reason.lower().replace(" ", "")
                hint = next(
                    (h for k, h in _REJECTION_HINTS.items() if k in low),
                    "nothing was changed on chain; fix the transaction and resubmit",
                )
                raise TransactionRejected(
                    f"the chain rejected the transaction: {reason}", hint
                ) from None
            except (ConnectionError, OSError, WebSocketException) as exc:
                # a timeout too: e.g. a dev chain that dropped an extrinsic from a full block
                raise ChainNotReachable(
                    f"no inclusion seen from {self.url} while submitting: "
                    f"{type(exc).__name__} {exc}",
                    hint="check the chain (dfml chain status); the transaction may or may not "
                    "have been included",
                ) from None
            receipt = self._receipt(raw)
        if check and not receipt.success:
            raise DispatchFailed(
                f"the transaction failed in block {receipt.block_number}: {receipt.error}",
                receipt=receipt,
                hint="nothing it did was kept; fix the call and resubmit",
            )
        return receipt

    def _submit_and_watch(self, extrinsic) -> ExtrinsicReceipt:
        """Submit ``extrinsic`` and wait until a block includes it (substrate-interface's
        ``submit_extrinsic(wait_for_inclusion=True)``, which ignores an ``invalid`` update and
        waits out its timeout). A dev chain (Chopsticks) that finds the extrinsic does not fit
        in the block it builds (``exhaustsResources``: a block full of a thousand workers'
        updates) drops it from its pool and says so; a node's pool would keep it for the next
        block, so it is submitted again, as it was, up to ``FULL_BLOCK_RETRIES`` times. Any
        other ``invalid`` answer raises at once with its reason."""
        sub = self.substrate

        def handler(message, update_nr, subscription_id):
            result = (message.get("params") or {}).get("result")
            if isinstance(result, dict):
                low = {k.lower(): v for k, v in result.items()}
                if "inblock" in low or "finalized" in low:
                    sub.rpc_request("author_unwatchExtrinsic", [subscription_id])
                    return {"block_hash": low.get("inblock") or low["finalized"]}
                if "invalid" in low or "dropped" in low:
                    sub.rpc_request("author_unwatchExtrinsic", [subscription_id])
                    return {"invalid": result}
            elif result in ("dropped", "invalid", "usurped"):
                return {"invalid": result}
            return None

        data = str(extrinsic.data)
        for attempt in range(FULL_BLOCK_RETRIES + 1):
            reply = sub.rpc_request(
                "author_submitAndWatchExtrinsic", [data], result_handler=handler
            )
            if "block_hash" in reply:
                return ExtrinsicReceipt(
                    substrate=sub,
                    extrinsic_hash="0x" + extrinsic.extrinsic_hash.hex(),
                    block_hash=reply["block_hash"],
                    finalized=False,
                )
            why = json.dumps(reply["invalid"])
            if "exhaustsresources" not in why.lower() or attempt == FULL_BLOCK_RETRIES:
                raise SubstrateRequestException({"message": why})
            _log.info("a full block dropped extrinsic %s: submitting it again", data[:18])
        raise AssertionError("unreachable")

    def _receipt(self, raw: ExtrinsicReceipt) -> Receipt:
        """The receipt of an included extrinsic: its index found by hashing the block's
        extrinsics as they are (none decoded), its events decoded once with the block's and
        kept for the indexer, which reads the same block next (substrate-interface decodes
        every extrinsic and event of the block, then the indexer did it again: seconds for a
        block of a thousand proxied updates). A failed one is read the long way, for its
        error's text."""
        from hashlib import blake2b

        from scalecodec.base import ScaleBytes
        from substrateinterface.utils.hasher import xxh128

        key = "0x" + (xxh128(b"System") + xxh128(b"Events")).hex()
        block, raw_events = self._rpc_many(
            [("chain_getBlock", [raw.block_hash]), ("state_getStorage", [key, raw.block_hash])]
        )
        wanted = (raw.extrinsic_hash or "").removeprefix("0x")
        index = next(
            (
                i
                for i, data in enumerate(block["block"]["extrinsics"])
                if blake2b(bytes.fromhex(data[2:]), digest_size=32).hexdigest() == wanted
            ),
            None,
        )
        if index is not None:
            spec = self.substrate.runtime_version
            events = tuple(
                e
                for e in self._decode_events(spec, raw_events, ScaleBytes)
                if e["extrinsic_index"] == index
            )
            if any(e["module"] == "System" and e["event"] == "ExtrinsicSuccess" for e in events):
                return Receipt(
                    block_hash=raw.block_hash,
                    block_number=int(block["block"]["header"]["number"], 16),
                    extrinsic_index=index,
                    success=True,
                    error=None,
                    fee=_fee(events),
                    events=events,
                )
        block_number = self.substrate.get_block_number(raw.block_hash)
        events = tuple(_event_dict(e) for e in raw.triggered_events)
        error = None
        if not raw.is_success:
            err = raw.error_message or {}
            error = f"{err.get('type', 'Error')}.{err.get('name', '?')}"
            docs = err.get("docs")
            if docs:
                error += f": {' '.join(docs) if isinstance(docs, list) else docs}"
        fee = int(raw.total_fee_amount or 0)
        return Receipt(
            block_hash=raw.block_hash,
            block_number=block_number,
            extrinsic_index=raw.extrinsic_idx,
            success=raw.is_success,
            error=error,
            fee=fee,
            events=events,
        )

    # -- convenience transactions ----------------------------------------------------------

    def transfer(self, key, dest: str, amount: int, *, keep_alive: bool = True) -> Receipt:
        return self.submit(key, self.transfer_call(dest, amount, keep_alive))

    def remark(self, key, data: bytes) -> Receipt:
        return self.submit(key, self.remark_call(data))

    def batch_all(self, key, calls: Sequence) -> Receipt:
        """All calls or none: if any fails, the whole batch is reverted."""
        return self.submit(key, self.batch_all_call(calls))

    # -- multisig ---------------------------------------------------------------------------

    def multisig_address(self, signatories: Iterable[str], threshold: int) -> str:
        addrs = [self.address(s) for s in signatories]
        _check_threshold(addrs, threshold)
        with self._lock:
            return self.substrate.generate_multisig_account(addrs, threshold).ss58_address

    def multisig_approve(self, key, call, signatories: Iterable[str], threshold: int) -> Receipt:
        """Approve ``call`` as one member of the k-of-n multisig; the k-th approval executes it.

        Members register their approval of the call hash (``approve_as_multi``) until k-1 have;
        then any member, one who already approved included, submits the call itself
        (``as_multi``), which runs as the multisig. Approving twice is refused.
        """
        receipt = self.submit(key, self.multisig_approval_call(key, call, signatories, threshold))
        if receipt.events_of("Multisig", "MultisigExecuted"):
            result = receipt.events_of("Multisig", "MultisigExecuted")[0]["attributes"]["result"]
            if isinstance(result, dict) and "Err" in result:
                raise DispatchFailed(
                    f"the multisig call failed when executed: {result['Err']}",
                    receipt=receipt,
                    hint="the approvals were used up; fund the multisig or fix the call",
                )
        return receipt

    def multisig_approval_call(self, key, call, signatories: Iterable[str], threshold: int):
        """The call :meth:`multisig_approve` submits for ``key`` now (``approve_as_multi``, or
        ``as_multi`` from the k-th member), for sending inside a batch of the member's own."""
        kp = self.keypair(key)
        addrs = [self.address(s) for s in signatories]
        _check_threshold(addrs, threshold)
        if kp.ss58_address not in addrs:
            raise UsageError(
                f"{kp.ss58_address} is not a member of this multisig",
                hint="sign with one of the signatories",
            )
        with self._lock:
            multi = self.substrate.generate_multisig_account(addrs, threshold)
            pending = self.substrate.query(
                "Multisig", "Multisigs", [multi.value, call.call_hash]
            ).value
            weight = self.substrate.get_payment_info(call, kp)["weight"]
        approvals = [self.address(a) for a in (pending or {}).get("approvals", [])]
        mine = kp.ss58_address in approvals
        # the pallet wants the other signatories sorted by account id
        others = sorted((a for a in addrs if a != kp.ss58_address), key=self.substrate.ss58_decode)
        params = {
            "threshold": threshold,
            "other_signatories": others,
            "maybe_timepoint": pending["when"] if pending else None,
            "max_weight": weight,
        }
        if len(approvals) + (0 if mine else 1) >= threshold:
            as_multi = {**params, "call": call}
            if self._has_param("Multisig", "as_multi", "store_call"):  # older runtimes
                as_multi["store_call"] = False
            multi_call = self.call("Multisig", "as_multi", as_multi)
        elif mine:
            raise UsageError(
                f"{kp.ss58_address} already approved this call; "
                f"{len(approvals)} of {threshold} approvals so far",
                hint="wait for the other signatories",
            )
        else:
            multi_call = self.call(
                "Multisig", "approve_as_multi", {**params, "call_hash": call.call_hash}
            )
        return multi_call

    def _has_call(self, module: str, function: str) -> bool:
        with self._lock:
            key = (self.substrate.runtime_version, module, function)
            found = self._has.get(key)
            if found is None:  # a metadata scan: asked once per runtime
                try:
                    found = self.substrate.get_metadata_call_function(module, function) is not None
                except Exception:  # noqa: BLE001 - unknown pallets raise, by version, in many ways
                    found = False
                self._has[key] = found
            return found

    def _has_param(self, module: str, function: str, param: str) -> bool:
        with self._lock:
            fn = self.substrate.get_metadata_call_function(module, function)
        return any(f["name"] == param for f in fn.value.get("fields", []))

    def multisig_pending(self, signatories: Iterable[str], threshold: int, call) -> dict | None:
        """The open approvals of ``call`` on the multisig, or None."""
        addrs = [self.address(s) for s in signatories]
        with self._lock:
            multi = self.substrate.generate_multisig_account(addrs, threshold)
            return self.substrate.query(
                "Multisig", "Multisigs", [multi.value, call.call_hash]
            ).value

    # -- blocks and events ------------------------------------------------------------------

    def events(self, block_hash: str) -> list[dict]:
        with self._lock:
            return [_event_dict(e) for e in self.substrate.get_events(block_hash)]

    def extrinsics(self, block_hash: str) -> list:
        """The decoded extrinsics of a block (call trees with their arguments)."""
        with self._lock:
            return self.substrate.get_block(block_hash=block_hash)["extrinsics"]

    def finalized_number(self) -> int:
        """The number of the newest finalized block."""
        return self.block_number(self._rpc("chain_getFinalizedHead"))

    def block(self, number_or_hash: int | str) -> Block:
        with self._lock:
            h = (
                number_or_hash
                if isinstance(number_or_hash, str)
                else self.substrate.get_block_hash(number_or_hash)
            )
            number = self.substrate.get_block_number(h)
        return Block(number, h, tuple(self.events(h)))

    def subscribe_blocks(
        self, handler: Callable[[Block], object], poll: float = 0.2, timeout: float | None = None
    ):
        """Call ``handler`` with every new block and its events, until it returns non-None.

        Runs in the caller's thread (use a thread to follow the chain in the background) and
        holds the process-wide chain lock only while it reads a block, so other threads keep
        using the chain. Returns the handler's first non-None result (None on ``timeout``).
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        seen = self.block_number()
        while deadline is None or time.monotonic() < deadline:
            head = self.block_number()
            for number in range(seen + 1, head + 1):
                result = handler(self.block(number))
                if result is not None:
                    return result
            seen = max(seen, head)
            time.sleep(poll)
        return None


def token_properties(props: dict | None) -> tuple[int, str, int]:
    """(ss58 format, token symbol, token decimals) from a chain's ``system_properties``: the
    first token where a chain lists several; the generic format 42, "UNIT" and 12 decimals
    (Substrate's defaults) for what it does not declare."""

    def first(value):
        return value[0] if isinstance(value, list | tuple) and value else value

    props = props or {}
    fmt = first(props.get("ss58Format"))
    symbol = first(props.get("tokenSymbol"))
    decimals = first(props.get("tokenDecimals"))
    return (
        SS58_FORMAT if fmt is None else int(fmt),
        "UNIT" if not symbol else str(symbol),
        12 if decimals is None else int(decimals),
    )


def address_of(who: str | Keypair, ss58_format: int = SS58_FORMAT) -> str:
    """An SS58 address (in ``ss58_format``) from an address in any format, a dev name
    (Alice, Dev3), or a key spec (no chain needed)."""
    if isinstance(who, Keypair):
        if who.ss58_format == ss58_format:
            return who.ss58_address
        from scalecodec.utils.ss58 import ss58_encode

        return ss58_encode(who.public_key, ss58_format)
    uri = _dev_name_uri(who)
    if uri:
        return load_keypair(uri, ss58_format=ss58_format).ss58_address
    try:
        from scalecodec.utils.ss58 import is_valid_ss58_address, ss58_decode, ss58_encode

        if is_valid_ss58_address(who):
            public = ss58_decode(who)
            return ss58_encode(public, ss58_format) if len(public) == 64 else who
    except Exception:
        pass
    if who.startswith("0x") and len(who) == 66:
        from scalecodec.utils.ss58 import ss58_encode

        return ss58_encode(who, ss58_format)
    try:
        return load_keypair(who, ss58_format=ss58_format).ss58_address
    except KeyLoadError:
        raise UsageError(
            f"{who!r} is not an address, a dev account name or a key",
            hint="give an SS58 address, Alice..Ferdie, DevN, or a key",
        ) from None


def _generic_address(text: str) -> bytes | None:
    """The account id of ``text`` when it is an SS58 address in the generic format 42 (how
    the protocol's state spells every account), else None."""
    # format 42 addresses of 32-byte accounts are 48 base58 characters starting with 5
    if len(text) != 48 or text[0] != "5":
        return None
    from scalecodec.utils.ss58 import ss58_decode

    try:
        return bytes.fromhex(ss58_decode(text, valid_ss58_format=SS58_FORMAT))
    except (ValueError, TypeError):
        return None


def in_chain_format(data: Any, ss58_format: int) -> Any:
    """``data`` (plain JSON data) with every generic-format (42) address, in values and in
    keys (rewards map addresses to amounts), spelled in ``ss58_format``: what a person sees is
    the chain's own spelling, whatever the state keeps. Other strings are left alone."""
    if ss58_format == SS58_FORMAT:
        return data
    from scalecodec.utils.ss58 import ss58_encode

    def one(value: Any) -> Any:
        if isinstance(value, str):
            raw = _generic_address(value)
            return value if raw is None else ss58_encode(raw, ss58_format)
        if isinstance(value, dict):
            return {one(k): one(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [one(v) for v in value]
        return value

    return one(data)


def is_connection_error(exc: BaseException) -> bool:
    """Whether ``exc`` says the chain's websocket failed (its classes vary by library)."""
    import websocket

    return isinstance(exc, ConnectionError | TimeoutError | OSError | websocket.WebSocketException)


def _dev_name_uri(name: str) -> str | None:
    """//Name for a dev account name (alice, Bob, Dev3), else None."""
    if name.capitalize() in DEV_NAMES:
        return "//" + name.capitalize()
    if re.fullmatch(r"[Dd]ev[1-9][0-9]*", name):
        return "//Dev" + name[3:]
    return None


def _check_threshold(addrs: list[str], threshold: int) -> None:
    if len(set(addrs)) != len(addrs):
        raise UsageError("multisig signatories must be distinct")
    if not 1 <= threshold <= len(addrs):
        raise UsageError(
            f"threshold {threshold} must be between 1 and the {len(addrs)} signatories"
        )


__all__ = ["Balance", "Block", "Chain", "ChainError", "Receipt"]
