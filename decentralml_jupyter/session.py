"""`Session`: one chain connection, one indexer, one store, and every verb as a typed method.

Every front end stands on it: `dfml` parses argv and calls a Session method, `%dfml` keeps one
Session per kernel, the widgets take one, and the Jupyter server extension keeps one for its
handlers. From plain Python::

    from decentralml_jupyter import Session

    with Session(key="//Alice") as s:
        for model in s.models():
            print(model.id, model.name, model.status)

Reads answer from the protocol state held in memory. A background subscription to finalized
heads says when there is something new, and only then are the new blocks folded in, so a read
on an idle chain costs no request at all. A write waits until its block is indexed, so a read
right after it sees it. Connections open lazily on first use; a chain that went away is
reconnected on the next call. Long work reports through a ``progress(message, fraction)``
callback the caller passes; a long first catch-up of the index reports through the one
`reporting` installs (the CLI's stderr, the magic's progress bar) when the verb passes none.

``from_block`` (DFML_FROM_BLOCK) is the protocol's first block on a chain with a history: the
index starts there and reads nothing before it (its own cache file per first block).
`token()` says the chain's token and address format, from the chain's properties.

Methods return the frozen values of `protocol.values` or the receipts of `receipts`; errors
are the `errors.DfmlError` hierarchy. A Session is safe to share between threads (calls take
turns on one lock).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from . import config
from .errors import ChainError, ChainNotReachable, DfmlError, NotFound, UsageError
from .fl.types import DEFAULT_LOCAL_EPOCHS
from .protocol.calls import DEFAULT_SLASH_PPM
from .receipts import (
    AccountBalance,
    CallSent,
    Done,
    Fetched,
    MarketCommitment,
    ModelStarted,
    ModelSubmitted,
    PayoutApproved,
    PlanStep,
    PoolHolding,
    Predicted,
    Proposed,
    ResultSubmitted,
    RoundsStarted,
    Sent,
    Staked,
    TaskAssigned,
    TaskCreated,
    Unstaked,
)

if TYPE_CHECKING:
    from .chain import Balance, Chain
    from .chain.heads import HeadWatcher
    from .protocol.client import ProtocolClient
    from .protocol.state import State
    from .protocol.values import (
        ErrorRecord,
        ModelInfo,
        Payout,
        ProposalInfo,
        ReputationInfo,
        RoundInfo,
        StakeInfo,
        SubmissionInfo,
        TaskInfo,
    )
    from .storage import KuboStore, Stored

Progress = Callable[[str, float | None], None]

LONG_SYNC = 500  # blocks: a catch-up this long reports its progress even unasked
_REPORT_EVERY = 2.0  # seconds between two progress reports of one catch-up


def _port_of(url: str, default: int) -> int:
    return urlparse(url).port or default


def _is_connection_error(exc: BaseException) -> bool:
    if isinstance(exc, ChainNotReachable):
        return True
    if isinstance(exc, DfmlError):
        return False
    from .chain.client import is_connection_error

    return is_connection_error(exc)


class Session:
    """The DecentralML verbs against one chain (``url``), one storage service (``storage``),
    signing with one key (``key``: a dev URI like //Alice, a key file, or a mnemonic; or
    ``key_file``, refused unless only its owner can read it), reading the protocol from block
    ``from_block`` on (None: DFML_FROM_BLOCK, or genesis; 0 is genesis). Defaults: DFML_URL,
    DFML_STORAGE, DFML_KEY."""

    def __init__(
        self,
        url: str | None = None,
        storage: str | None = None,
        key: str | None = None,
        *,
        key_file: str | None = None,
        from_block: int | None = None,
    ):
        self.url = url or config.default_url()
        self.storage = storage or config.default_storage()
        self.from_block = (
            config.default_from_block()
            if from_block is None
            else config.parse_from_block(from_block, "from_block")
        )
        if key_file:
            from .chain.keys import check_key_file

            key = str(check_key_file(key_file))
        self._key = key or config.default_key()
        self._lock = threading.RLock()
        self._chain: Chain | None = None
        self._protocol: ProtocolClient | None = None
        self._store: KuboStore | None = None
        self._heads: HeadWatcher | None = None
        self._generation = -1  # the head subscription the index was last checked against
        self._broken = False  # the last chain call lost the connection: reconnect first
        self._addresses: dict[tuple[str, int], str] = {}
        self._reporting = threading.local()  # the progress callback of this thread's verb
        self._specs: dict[str, bytes] = {}  # architecture CID -> spec (content-addressed)

    def __repr__(self) -> str:  # the key is never shown
        return f"Session(url={self.url!r}, storage={self.storage!r})"

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connections (a later call opens them again)."""
        with self._lock:
            if self._heads is not None:
                self._heads.close()
                self._heads = None
            if self._protocol is not None:
                self._protocol.indexer.close()
                self._protocol = None
            if self._chain is not None:
                try:
                    self._chain.close()
                except Exception:  # noqa: BLE001 - closing a dead socket
                    pass
                self._chain = None
            self._generation = -1

    def same_endpoints(self, url: str, storage: str, key: str, from_block: Any = ...) -> bool:
        """Whether this session talks to ``url`` and ``storage`` and signs with ``key`` (and,
        if given, reads the protocol from ``from_block``)."""
        if from_block is not ... and _first(from_block) != _first(self.from_block):
            return False
        return (url, storage, key) == (self.url, self.storage, self._key)

    @contextlib.contextmanager
    def reporting(self, progress: Progress | None) -> Iterator[None]:
        """Within the block, a long catch-up of the index (`LONG_SYNC` blocks or more) made
        by this thread reports through ``progress`` when the call passes none of its own."""
        before = getattr(self._reporting, "progress", None)
        self._reporting.progress = progress
        try:
            yield
        finally:
            self._reporting.progress = before

    # -- connections --------------------------------------------------------------------------

    @property
    def chain(self) -> Chain:
        """The chain connection (opened on first use; reopened after the chain went away)."""
        with self._lock:
            if self._chain is None:
                from .chain import Chain

                self._chain = Chain(self.url)
                self._broken = False
            elif self._broken:
                self._chain.reconnect()  # ChainNotReachable while nothing answers
                self._broken = False
                self._generation = -1  # check the index against the chain again
            return self._chain

    @property
    def protocol(self) -> ProtocolClient:
        """The protocol client with this session's indexer (its state kept between calls)."""
        with self._lock:
            chain = self.chain
            if self._protocol is None:
                from .protocol.client import ProtocolClient
                from .protocol.indexer import Indexer

                self._protocol = ProtocolClient(chain, Indexer.for_chain(chain, self.from_block))
            self._protocol.chain = self._protocol.indexer.chain = chain
            if self._heads is None:
                from .chain.heads import HeadWatcher

                self._heads = HeadWatcher(self.url)
            return self._protocol

    @property
    def store(self) -> KuboStore:
        if self._store is None:
            from .storage import KuboStore

            self._store = KuboStore.from_env(self.storage)
        return self._store

    def _forget_chain(self) -> None:
        """The chain was stopped or replaced (chain/devnet up or down): start afresh."""
        with self._lock:
            if self._heads is not None:
                self._heads.close()
                self._heads = None
            if self._chain is not None:
                try:
                    self._chain.close()
                except Exception:  # noqa: BLE001
                    pass
                self._chain = None
            if self._protocol is not None:
                self._protocol.indexer.close()
                self._protocol = None
            self._generation = -1

    def _call(self, fn: Callable[[], Any], *, retry: bool) -> Any:
        """Run ``fn`` under the session's lock; a lost connection is reopened for the next
        call, and a read (``retry``) is tried once more on the new connection."""
        with self._lock:
            try:
                return fn()
            except Exception as exc:
                if not _is_connection_error(exc):
                    raise
                self._broken = self._chain is not None
                if not retry:
                    raise self._unreachable(exc) from None
            try:
                return fn()
            except Exception as exc:
                if not _is_connection_error(exc):
                    raise
                self._broken = self._chain is not None
                raise self._unreachable(exc) from None

    def _unreachable(self, exc: BaseException) -> ChainNotReachable:
        if isinstance(exc, ChainNotReachable):
            return exc
        return ChainNotReachable(
            f"lost the chain at {self.url}: {type(exc).__name__}: {exc}",
            hint="is it running? dfml chain status; the next call reconnects",
        )

    def _read(self, fn: Callable[[], Any]) -> Any:
        return self._call(fn, retry=True)

    def _write(self, fn: Callable[[], Any]) -> Any:
        return self._call(fn, retry=False)

    # -- the protocol state -------------------------------------------------------------------

    def state(self, progress: Progress | None = None) -> State:
        """The protocol state at the newest finalized block this session knows of.

        Costs no request while no block was finalized since the last call. The state is the
        session's own, live object: read it under no other thread's writes (the methods of
        this class do), or use the typed methods."""
        return self._read(lambda: self._synced(progress))

    def _synced(self, progress: Progress | None = None) -> State:
        proto = self.protocol
        indexer, heads = proto.indexer, self._heads
        assert heads is not None
        generation, number = heads.generation, heads.number
        if progress is not None:  # asked for: every catch-up reports
            report = _catch_up_reporter(progress, indexer.block_number + 1, 1)
        else:  # the verb's (CLI, magic): only a long one
            unasked = getattr(self._reporting, "progress", None)
            report = _catch_up_reporter(unasked, indexer.block_number + 1, LONG_SYNC)
        if generation == 0 or generation != self._generation:
            # no subscription yet, or a new one (the chain may have restarted): ask the chain
            indexer.sync(progress=report)
            self._generation = generation
        elif number > indexer.block_number:
            indexer.sync(to=number, progress=report, check=False)
        return indexer.state

    def _address(self, who: str) -> str:
        """An SS58 address for an address (any format), a dev name or a key, in the chain's
        format once connected (cached: keys cost a derivation)."""
        fmt = self._chain.ss58_format if self._chain is not None else _GENERIC_SS58
        found = self._addresses.get((who, fmt))
        if found is None:
            from .chain.client import address_of

            found = self._addresses[(who, fmt)] = address_of(who, fmt)
        return found

    def _account(self, who: str) -> str:
        """``who`` as the protocol's state spells accounts (format 42, whatever the chain's)."""
        from .protocol.accounts import normalize_address

        return normalize_address(self._address(who))

    @property
    def address(self) -> str:
        """The address of this session's signing key: in the chain's format once connected
        (no connection is opened for it; before one, the generic format 42)."""
        return self._address(self._key)

    def token(self) -> dict[str, Any]:
        """The chain's token and address format, from its properties: ``{"symbol",
        "decimals", "ss58_format"}`` (amounts everywhere are integers of the smallest unit:
        ``amount / 10**decimals`` tokens)."""
        return self._read(lambda: self.chain.token())

    # -- chain ----------------------------------------------------------------------------------

    def chain_install(self, progress: Progress | None = None) -> dict:
        from .chain import devchain

        inst = devchain.install(progress=progress)
        return {"path": str(inst.root), "genesis": str(inst.genesis), "persistence": inst.sqlite}

    def chain_up(
        self,
        *,
        port: int | None = None,
        base_path: str | None = None,
        accounts: int = 0,
        block_mode: str = "instant",
        progress: Progress | None = None,
    ) -> dict:
        from .chain import devchain

        self._forget_chain()
        return devchain.up(
            port=port if port is not None else _port_of(self.url, 9944),
            base_path=base_path,
            accounts=accounts,
            block_mode=block_mode,
            progress=progress,
        )

    def chain_status(self) -> dict:
        from .chain import devchain

        return devchain.status(self.url)

    def chain_down(self) -> dict:
        from .chain import devchain

        self._forget_chain()
        return devchain.down(_port_of(self.url, 9944))

    def advance(self, blocks: int = 1) -> int:
        """Build ``blocks`` empty blocks (dev chains); the new head's number."""
        return self._write(lambda: self.chain.new_blocks(blocks))

    # -- accounts -------------------------------------------------------------------------------

    def accounts(self) -> list[AccountBalance]:
        """The dev accounts of a dev chain and their balances (one request for all)."""
        from .chain import devchain

        def read() -> list[AccountBalance]:
            chain = self.chain
            if not chain.is_dev:
                raise UsageError(
                    "account list shows the dev accounts of a dev chain; this chain is not one",
                    hint="use: dfml account balance ADDRESS",
                )
            record = devchain.running_record(_port_of(self.url, 9944)) or {}
            names = [name for name, _uri in devchain.dev_accounts(record.get("accounts", 0))]
            balances = chain.balances([self._address(n) for n in names])
            return [
                AccountBalance(n, b.address, b.free, b.reserved)
                for n, b in zip(names, balances, strict=True)
            ]

        return self._read(read)

    def balance(self, who: str | None = None) -> Balance:
        """Free and reserved balance of ``who`` (default: this session's account)."""
        return self._read(lambda: self.chain.balance(self._address(who or self._key)))

    def transfer(self, to: str, amount: int) -> Sent:
        def send() -> Sent:
            receipt = self.chain.transfer(self._key, self._address(to), amount)
            return Sent(receipt, receipt.fee)

        return self._write(send)

    def remark(self, data: bytes) -> Sent:
        def send() -> Sent:
            receipt = self.chain.remark(self._key, data)
            return Sent(receipt, receipt.fee)

        return self._write(send)

    # -- storage --------------------------------------------------------------------------------

    def storage_up(self, *, port: int | None = None, repo: str | None = None) -> dict:
        from .storage import storage_up

        return storage_up(port=port or _port_of(self.storage, 5001), repo=repo)

    def storage_status(self) -> dict:
        from .storage import storage_status

        return storage_status(self.storage)

    def storage_down(self) -> dict:
        from .storage import storage_down

        return storage_down(self.storage)

    def put_file(self, path: str | Path, progress: Progress | None = None) -> Stored:
        name = Path(path).name
        return self.store.put_file(path, progress=byte_progress(f"uploading {name}", progress))

    def get_file(self, cid: str, out: str | Path) -> Stored:
        return self.store.get_file(cid, out)

    # -- models ---------------------------------------------------------------------------------

    def models(self) -> list[ModelInfo]:
        return self._read(lambda: self._synced().models())

    def model(self, model_id: int) -> ModelInfo:
        """One model; NotFound if there is none with that id."""

        def read() -> ModelInfo:
            model = self._synced().model(model_id)
            if model is None:
                raise NotFound(f"no model {model_id}", hint="list them with: dfml model list")
            return model

        return self._read(read)

    def submit_model(
        self,
        model: Any,
        *,
        name: str | None = None,
        description: str = "",
        metric: str = "accuracy",
        strategy: str = "fedavg",
        strategy_params: Mapping[str, Any] | None = None,
        license: str = "proprietary",
        jurisdictions: Sequence[str] = (),
        validators: Sequence[str] = (),
        stake_asset: int | None = None,
        reward_policy: str = "proportional",
        round_reward: int = 0,
        slash_permill: int = DEFAULT_SLASH_PPM,
        improvement_tolerance: float = 0.0,
        unimproved: str = "adopt",
        label: str | None = None,
        features: Sequence[str] = (),
        deposit: int = 0,
    ) -> ModelSubmitted:
        """Register ``model`` (a Keras model, or the path of a saved ``.keras`` file): its
        architecture, data contract and training setup, and its initial weights go to
        storage, the registration to the chain. ``label`` ("classes:N", "binary",
        "multilabel:N", "regression") overrides what the output layer implies; ``features``
        names a table's columns in the model's input order. A model compiled before is
        trained by every worker with its optimizer and loss. With no ``validators`` on a dev
        network, its validators judge the model. ``strategy_params`` sets the strategy's
        parameters by short name (e.g. ``{"eta": 0.05}`` for fedadam, ``{"f": 1, "keep":
        3}`` for multikrum); they are checked before anything is stored or sent. A round
        pays its contributors only if its model is no worse on the model's ``metric`` than
        the one it started from by more than ``improvement_tolerance`` (in the metric's
        unit); otherwise its budget goes back and ``unimproved`` says whether its model is
        adopted (``adopt``) or not (``reject``). Under ``reward_policy="drt"`` every update
        carries ``deposit`` (in the stake asset): refunded when the update is accepted, after
        a wait, and shared among the round's accepted contributors when it is rejected."""
        from .fl.strategies import check_params
        from .protocol import RewardPolicy

        if reward_policy == "drt" and deposit <= 0:
            raise UsageError(
                "the drt policy needs a deposit", hint="give --deposit AMOUNT (above 0)"
            )
        if deposit and reward_policy != "drt":
            raise UsageError(
                f"a deposit is only taken under --reward-policy drt, not {reward_policy}"
            )

        params = check_params(strategy, strategy_params or {})  # a clear error, and no fee
        from .protocol import calls as C
        from .protocol import encoders

        rule = encoders.improvement_rule(improvement_tolerance, unimproved)
        spec, weights, default_name = _model_artifacts(model, label, features)
        if strategy.removesuffix(":secure") == "proxyfl":
            from .fl.proxyfl import check_model

            check_model(spec)  # before anything is stored or sent
        arch_cid, weights_cid = self.store.put(spec), self.store.put(weights)

        def send() -> ModelSubmitted:
            proto = self.protocol
            chosen = [self._address(v) for v in validators]
            if not chosen:
                from .agents import devnet

                chosen = devnet.validator_addresses(self.url)
            sub = proto.register_model(
                self._key,
                name or default_name,
                arch_cid,
                weights_cid,
                description=description,
                metric=metric,
                licence=license,
                jurisdictions=list(jurisdictions),
                strategy=strategy,
                strategy_params=params,
                improvement=None if rule == C.DEFAULT_IMPROVEMENT else rule,
                stake_asset=stake_asset,
                validators=chosen,
                reward_policy=RewardPolicy(reward_policy, round_reward, slash_permill),
                deposit=deposit,
            )
            model_id = sub.created_id("model")
            # the index as of the receipt's block (folded again if it was reset meanwhile: a
            # busy dev chain may replace its newest block, and the index then replays)
            found = proto.indexer.wait_for(sub.receipt.block_number).model(model_id)
            if found is None:  # its block was replaced after the check above
                raise ChainError(
                    f"the model's registration is no longer on the chain (block "
                    f"{sub.receipt.block_number} was replaced)",
                    hint="submit the model again; its artefacts are stored already",
                )
            pool = found.pool
            return ModelSubmitted(model_id, arch_cid, weights_cid, pool, sub.receipt)

        return self._write(send)

    def spec(self, architecture_cid: str) -> bytes:
        """A model's architecture artefact, read once (a CID names its content forever)."""
        found = self._specs.get(architecture_cid)
        if found is None:
            from .agents.base import MAX_SPEC_BYTES

            found = self.store.get(architecture_cid, max_bytes=MAX_SPEC_BYTES)
            self._specs[architecture_cid] = found
        return found

    def model_setup(self, model_id: int) -> dict[str, Any]:
        """What a model takes and how it is trained, as its registration recorded them:
        ``{"data": {"input_shape", "dtype", "label", "features"}, "training": {"optimizer",
        "learning_rate", "loss", "metrics"}}`` (read from its architecture artefact)."""
        from . import fl

        spec = self.spec(self.model(model_id).architecture_cid)
        return {
            "data": fl.spec_contract(spec).to_json(),
            "training": fl.spec_training(spec).to_json(),
        }

    def start_training(self, model_id: int) -> ModelStarted:
        return self._write(
            lambda: ModelStarted(
                model_id, self.protocol.start_training(self._key, model_id).receipt
            )
        )

    def global_weights(self, model_id: int, round_number: int | None = None) -> tuple[str, Any]:
        """(CID, weights as a list of arrays) of a model's global model: the newest, that of
        its finalized round ``round_number``, or (0) its initial weights."""
        from . import fl

        model = self.model(model_id)
        cid = model.global_cid
        if round_number is not None:
            if round_number == 0:
                cid = model.weights_cid
            else:
                history = self.round_history(model_id)
                found = [r for r in history if r.number == round_number]
                if not found:
                    raise UsageError(
                        f"model {model_id} has no finalized round {round_number}",
                        hint=f"its rounds: dfml round history {model_id}",
                    )
                cid = found[0].aggregate_cid
        return cid, fl.weights_from_bytes(self.store.get(cid))

    def fetch_model(self, model_id: int, round_number: int | None = None) -> tuple[str, Any]:
        """(CID, a Keras model) of a model's global model (see `global_weights`)."""
        from . import fl

        spec = self.store.get(self.model(model_id).architecture_cid)
        cid, weights = self.global_weights(model_id, round_number)
        model = fl.model_from_spec(spec)
        model.set_weights(weights)
        return cid, model

    def save_model(
        self, model_id: int, out: str | Path, round_number: int | None = None
    ) -> Fetched:
        if Path(out).suffix != ".keras":
            raise UsageError(f"{out} must end in .keras", hint="e.g. --out model.keras")
        cid, model = self.fetch_model(model_id, round_number)
        model.save(Path(out))
        return Fetched(str(out), cid)

    def predict(self, model_id: int, x: Any) -> Predicted:
        """The classes the global model predicts for the inputs ``x`` (an array)."""
        import numpy as np

        from . import fl

        spec = self.store.get(self.model(model_id).architecture_cid)
        cid, weights = self.global_weights(model_id)
        probs = fl.predict(spec, weights, np.asarray(x, dtype=np.float32))
        return Predicted(tuple(np.asarray(probs).argmax(axis=-1).tolist()), cid)

    # -- stakes ---------------------------------------------------------------------------------

    def stake(self, model_id: int, amount: int, asset: int | None = None) -> Staked:
        def send() -> Staked:
            sub = self.protocol.stake(self._key, model_id, amount, asset)
            mine = self._account(self._key)
            rows = self.protocol.indexer.state.stakes(model_id=model_id, account=mine)
            return Staked(rows[0] if rows else None, sub.receipt)

        return self._write(send)

    def unstake(self, model_id: int, amount: int) -> Unstaked:
        def send() -> Unstaked:
            sub = self.protocol.unstake(self._key, model_id, amount)
            mine = self._account(self._key)
            rows = self.protocol.indexer.state.stakes(model_id=model_id, account=mine)
            return Unstaked(tuple(rows), sub.receipt)

        return self._write(send)

    def stakes(self, model_id: int | None = None, account: str | None = None) -> list[StakeInfo]:
        who = self._account(account) if account else None
        return self._read(lambda: self._synced().stakes(model_id=model_id, account=who))

    def reputation(
        self, model_id: int | None = None, account: str | None = None
    ) -> list[ReputationInfo]:
        """Each worker's record per model (accepted and rejected updates, contribution scores,
        rewards, slashes), derived from the chain."""
        who = self._account(account) if account else None
        return self._read(lambda: self._synced().reputation(model_id=model_id, account=who))

    # -- governance -----------------------------------------------------------------------------

    def propose(
        self,
        target: int | str | None,
        kind: Any,
        params: Mapping[str, Any] | None = None,
        *,
        deadline: int = 10,
    ) -> Proposed:
        """Propose ``kind`` (a name like "AddValidator" with ``params``, or an action of
        `protocol.calls`) for model ``target`` (or "protocol"/None for the protocol itself).
        Dev names are accepted where an account is expected."""
        from .protocol import encoders
        from .protocol.calls import Action

        if target in (None, "protocol"):
            target_id = None
        else:
            target_id = int(target)
            if target_id <= 0:
                raise UsageError(f"{target!r} is not a model id", hint="ids start at 1")
        if isinstance(kind, Action):
            action = kind
        else:
            values = {k: str(v) for k, v in (params or {}).items()}
            if "account" in values:
                values["account"] = self._address(values["account"])
            if "allow" in values:
                values["allow"] = ",".join(self._address(a) for a in values["allow"].split(","))
            action = encoders.action_from_params(str(kind), values)

        def send() -> Proposed:
            sub = self.protocol.propose(self._key, target_id, action, deadline)
            return Proposed(sub.created_id("proposal"), sub.receipt)

        return self._write(send)

    def vote(self, proposal_id: int, aye: bool) -> Done:
        return self._write(lambda: Done(self.protocol.vote(self._key, proposal_id, aye).receipt))

    def proposals(self, open_only: bool = False) -> list[ProposalInfo]:
        return self._read(lambda: self._synced().proposals(open_only=open_only))

    def errors(self, account: str | None = None) -> list[ErrorRecord]:
        who = self._account(account) if account else None
        return self._read(lambda: self._synced().errors(account=who))

    # -- pools and payouts ----------------------------------------------------------------------

    def payouts(self, pending: bool = False) -> list[Payout]:
        def read() -> list[Payout]:
            state = self._synced()
            return state.pending_payouts() if pending else state.payouts()

        return self._read(read)

    def pools(self) -> list[PoolHolding]:
        """Every model pool: what the books say it holds, and (native pools) what the chain
        says, read in one request."""

        def read() -> list[PoolHolding]:
            pools = self._synced().pools()
            native = [p for p in pools if p.asset_id is None]
            from .protocol.accounts import normalize_address

            balances = self.chain.balances([p.pool for p in native])
            held = {normalize_address(b.address): b.free for b in balances}
            return [PoolHolding(p, held.get(p.pool) if p.asset_id is None else None) for p in pools]

        return self._read(read)

    def approve_payout(self, payout_id: int | Sequence[int]) -> PayoutApproved:
        ids = payout_id if isinstance(payout_id, int) else tuple(payout_id)
        return self._write(
            lambda: PayoutApproved(ids, self.protocol.approve_payout(self._key, payout_id))
        )

    # -- tasks ----------------------------------------------------------------------------------

    def create_task(
        self,
        model_id: int,
        role: str,
        reward: int,
        *,
        max_assignments: int = 1,
        duration: int = 50,
        validation: str = "manual",
        description: str = "",
    ) -> TaskCreated:
        def send() -> TaskCreated:
            sub = self.protocol.create_task(
                self._key,
                model_id,
                role,
                reward,
                max_assignments,
                duration,
                validation=validation,
                description=description,
            )
            return TaskCreated(sub.created_id("task"), sub.receipt)

        return self._write(send)

    def tasks(self, model_id: int | None = None) -> list[TaskInfo]:
        return self._read(lambda: self._synced().tasks(model_id=model_id))

    def submissions(self, task_id: int | None = None) -> list[SubmissionInfo]:
        return self._read(lambda: self._synced().submissions(task_id=task_id))

    def assign_task(self, task_id: int) -> TaskAssigned:
        return self._write(
            lambda: TaskAssigned(task_id, self.protocol.assign_task(self._key, task_id).receipt)
        )

    def submit_result(self, task_id: int, cid: str) -> ResultSubmitted:
        def send() -> ResultSubmitted:
            sub = self.protocol.submit_result(self._key, task_id, cid)
            return ResultSubmitted(sub.created_id("submission"), sub.receipt)

        return self._write(send)

    def accept_submission(self, submission_id: int) -> Done:
        return self._write(
            lambda: Done(self.protocol.accept_submission(self._key, submission_id).receipt)
        )

    def reject_submission(self, submission_id: int, reason: str = "") -> Done:
        return self._write(
            lambda: Done(self.protocol.reject_submission(self._key, submission_id, reason).receipt)
        )

    # -- rounds ---------------------------------------------------------------------------------

    def start_rounds(
        self,
        model_id: int,
        *,
        clients: int = 4,
        min_clients: int | None = None,
        deadline: int = 0,
        aggregate_deadline: int = 0,
        epochs: int = DEFAULT_LOCAL_EPOCHS,
        batch_size: int = 32,
        lr: float | None = None,
        clip_norm: float | None = None,
        noise_multiplier: float | None = None,
        reward: int = 0,
        rounds: int = 1,
        bounty: int = 0,
        test_commitment: str | MarketCommitment | None = None,
    ) -> RoundsStarted:
        """Start a round of a training model, or a plan of ``rounds`` back to back (each
        opens in the block that ends the one before; the budget is ``reward`` per round).
        ``lr`` None: workers train with the model's own optimizer and rate (plain SGD at
        0.05 for a model registered uncompiled). A prediction-market model's plan may carry
        a ``bounty`` and the ``test_commitment`` of a hidden test set (``commit_test_set``):
        after the last round, ``reveal_test_set``, and the validators pay the bounty by each
        round's gain on it."""
        from .protocol import encoders
        from .protocol.calls import MAX_PLAN

        if not 1 <= rounds <= MAX_PLAN:
            raise UsageError(f"--rounds must be 1..{MAX_PLAN}, got {rounds}")
        if isinstance(test_commitment, MarketCommitment):
            test_commitment = test_commitment.commitment
        if (bounty > 0) != (test_commitment is not None):
            raise UsageError(
                "a prediction market needs both a bounty and a test-set commitment",
                hint="commit first (dfml round commit --test-set FILE), then give --bounty "
                "AMOUNT --test-commitment HASH",
            )
        spec = encoders.round_spec(
            clients,
            min_clients,
            submit_blocks=deadline,
            aggregate_blocks=aggregate_deadline,
            epochs=epochs,
            batch_size=batch_size,
            learning_rate=0.0 if lr is None else lr,
            clip_norm=clip_norm,
            noise_multiplier=noise_multiplier,
            reward=reward,
        )

        def send() -> RoundsStarted:
            sub = self.protocol.start_rounds(
                self._key, model_id, spec, rounds, bounty, test_commitment
            )
            rid = sub.created_id("round")
            market = None
            if test_commitment is not None:
                rnd = self.protocol.indexer.wait_for(sub.receipt.block_number).round(rid)
                market = None if rnd is None else rnd.market_id
            return RoundsStarted(rid, rounds, sub.receipt, market)

        return self._write(send)

    def commit_test_set(self, path: str | Path, model_id: int | None = None) -> MarketCommitment:
        """Commit to a hidden test set for a prediction market: an ``.npz`` file of ``x`` and
        ``y`` (checked against the model's data contract with ``model_id``). Its CID is
        computed here and a random salt drawn: nothing is uploaded or sent. Give the result
        (or its ``commitment``) to ``start_rounds(bounty=...)``; keep it for the reveal."""
        import secrets

        from . import fl
        from .agents.validator import MAX_TEST_SET_BYTES
        from .protocol.calls import market_commitment
        from .storage.unixfs import compute_cid

        path = Path(path)
        if path.suffix != ".npz":
            raise UsageError(
                f"{path}: a test set is an .npz file of arrays x and y",
                hint="np.savez(path, x=x_test, y=y_test)",
            )
        if path.is_file() and path.stat().st_size > MAX_TEST_SET_BYTES:
            raise UsageError(
                f"{path} is larger than validators read ({MAX_TEST_SET_BYTES >> 20} MiB)",
                hint="commit to a smaller sample of your test data",
            )
        contract = None
        if model_id is not None:
            contract = fl.spec_contract(self.spec(self.model(model_id).architecture_cid))
        fl.load_data(path, None, contract)  # a clear error now, not a forfeit later
        cid = compute_cid(path.read_bytes())
        salt = "0x" + secrets.token_hex(16)
        return MarketCommitment(cid, salt, market_commitment(cid, salt), str(path))

    def reveal_test_set(
        self,
        model_id: int,
        commitment: MarketCommitment | None = None,
        *,
        test_set: str | Path | None = None,
        test_cid: str | None = None,
        salt: str | None = None,
    ) -> Done:
        """Reveal the test set of the model's prediction market, after its plan's last
        round: the file goes to storage (validators read it there) and its CID and salt to
        the chain, which checks them against the commitment."""
        if commitment is not None:
            test_set = test_set or commitment.test_set
            test_cid, salt = test_cid or commitment.cid, salt or commitment.salt
        if test_cid is None or salt is None:
            raise UsageError(
                "the reveal needs the test set's CID and the salt",
                hint="give the commitment commit_test_set returned (--commitment-file), or "
                "--test-cid and --salt",
            )
        if test_set is not None:
            stored = self.store.put_file(test_set).cid
            if stored != test_cid:
                raise UsageError(
                    f"{test_set} is stored as {stored}, not the committed {test_cid}",
                    hint="reveal the very file you committed to",
                )
        cid, hex_salt = test_cid, salt
        return self._write(
            lambda: Done(self.protocol.reveal_test_set(self._key, model_id, cid, hex_salt).receipt)
        )

    def markets(self, model_id: int | None = None) -> list:
        """Prediction markets (of one model, or all): bounty, rounds, status, gains, paid."""
        return self._read(lambda: self._synced().markets(model_id))

    def round(self, round_id: int) -> RoundInfo:
        """One round; NotFound if there is none with that id."""
        return self._read(lambda: self._round(self._synced(), round_id))

    @staticmethod
    def _round(state: State, round_id: int) -> RoundInfo:
        rnd = state.round(round_id)
        if rnd is None:
            raise NotFound(f"no round {round_id}", hint="see: dfml round history MODEL")
        return rnd

    def next_round(self, rnd: RoundInfo) -> RoundInfo | None:
        """The round its plan (`start_rounds(rounds=N)`) opened when ``rnd`` ended, if any."""
        return self._read(lambda: _next_in_plan(self._synced(), rnd))

    def rounds(self, model_id: int | None = None) -> list[RoundInfo]:
        """Every round (of one model, or of all), oldest first."""
        return self._read(lambda: self._synced().rounds(model_id))

    def round_history(self, model_id: int) -> list[RoundInfo]:
        """A model's rounds, oldest first; NotFound for a model that does not exist."""

        def read() -> list[RoundInfo]:
            state = self._synced()
            if state.model(model_id) is None:
                raise NotFound(f"no model {model_id}", hint="list them with: dfml model list")
            return state.round_history(model_id)

        return self._read(read)

    def watch_round(
        self,
        round_id: int,
        *,
        timeout: float = 600.0,
        plan: bool = False,
        progress: Progress | None = None,
    ) -> tuple[RoundInfo, tuple[PlanStep, ...]]:
        """Follow a round until it ends (and with ``plan``, the rounds its plan opens after
        it); the last round, and one step per ended round of the plan."""
        deadline = time.monotonic() + timeout
        steps: list[PlanStep] = []
        rid, last = round_id, None
        while True:
            rnd = self.round(rid)
            heads = self._heads
            seen = heads.number if heads is not None else -1
            line = (rnd.round_id, rnd.status, len(rnd.submitted), len(rnd.attestations))
            if line != last and progress is not None:
                progress(
                    f"round {rnd.round_id}: {rnd.status}, {len(rnd.submitted)}/"
                    f"{len(rnd.selected)} updates, {len(rnd.attestations)} attestations",
                    None,
                )
            last = line
            if rnd.status in ("finalized", "failed"):
                nxt = self.next_round(rnd) if plan else None
                if plan:
                    accuracy = rnd.metrics.get("accuracy")
                    steps.append(PlanStep(rnd.round_id, rnd.status, accuracy, rnd.ended_block))
                if nxt is None:
                    return rnd, tuple(steps)
                rid = nxt.round_id
                continue
            if time.monotonic() > deadline:
                raise DfmlError(
                    f"round {rid} still {rnd.status} after {timeout:.0f} s",
                    hint="is the dev network running? dfml devnet status; then watch again",
                )
            if heads is not None:
                heads.wait(after=seen, timeout=1.0)  # look again once a block is finalized
            else:
                time.sleep(0.5)

    def rounds_frame(self, model_id: int | None = None):
        """Every update of every round as a pandas DataFrame, one row per (round, worker):
        participants, update and aggregate CIDs, accuracy and loss, rewards and slashes."""
        import pandas as pd

        rows = []
        for rnd in self.rounds(model_id):
            base = {
                "round_id": rnd.round_id,
                "model_id": rnd.model_id,
                "number": rnd.number,
                "status": rnd.status,
                "aggregate_cid": rnd.aggregate_cid,
                "accuracy": rnd.metrics.get("accuracy"),
                "loss": rnd.metrics.get("loss"),
            }
            by_worker = {u.worker: u for u in rnd.updates}
            for worker in rnd.selected:
                u = by_worker.get(worker)
                rows.append(
                    {
                        **base,
                        "worker": worker,
                        "update_cid": u.cid if u else None,
                        "num_examples": u.num_examples if u else 0,
                        "update_status": u.status if u else "missing",
                        "reason": u.reason if u else "",
                        "reward": rnd.rewards.get(worker, 0),
                        "slash": rnd.slashes.get(worker, 0),
                    }
                )
        return pd.DataFrame(rows)

    # -- any call ---------------------------------------------------------------------------

    def send(self, call: Any) -> CallSent:
        """Send any protocol call (an instance of a class of `protocol.calls`), with the
        transfer its declaration says must travel with it; the ids it created."""
        from .protocol.calls import Call

        if not isinstance(call, Call):
            raise UsageError(
                f"{type(call).__name__} is not a protocol call",
                hint="build one from decentralml_jupyter.protocol.calls, e.g. calls.Vote(1, True)",
            )

        def go() -> CallSent:
            sub = self.protocol.send(self._key, call)
            return CallSent(call.NAME, dict(sub.created), sub.receipt)

        return self._write(go)

    @staticmethod
    def decode(remark: bytes | str) -> dict[str, Any]:
        """A protocol remark (bytes, or hex) as ``{"call", "fields"}``; CodecError if it is
        not one."""
        from .protocol.calls import decode_call

        if isinstance(remark, str):
            try:
                remark = bytes.fromhex(remark.removeprefix("0x"))
            except ValueError:
                raise UsageError(
                    f"{remark[:20]!r}... is not hex", hint="give the remark's bytes as hex"
                ) from None
        call = decode_call(remark)
        fields = call.to_json()
        fields.pop("type", None)
        return {"call": call.NAME, "fields": fields}

    # -- the dev network ------------------------------------------------------------------------

    def devnet_up(self, *, progress: Progress | None = None, **options: Any) -> dict:
        """Start chain, storage and agents (options as `agents.devnet.up`)."""
        from .agents import devnet

        self._forget_chain()
        return devnet.up(self.url, self.storage, progress=progress, **options)

    def devnet_status(self) -> dict:
        from .agents import devnet

        return devnet.status(self.url)

    def devnet_down(self) -> dict:
        from .agents import devnet

        self._forget_chain()
        return devnet.down(self.url)

    # -- taking part from this process ------------------------------------------------------

    def join_worker(
        self,
        model_id: int,
        data: Any,
        *,
        target: str | None = None,
        stake: int | None = None,
    ):
        """Run a worker of ``model_id`` in this process, in the background, signing with this
        session's key, on ``data`` (a DataFrame with ``target``, an (x, y) pair, a
        tf.data.Dataset, or a file or folder): checked against the model's data contract
        first (DataMismatch: nothing is staked), then it stakes ``stake`` (default: the
        model's minimum) and trains whenever a round selects it. Its `Participant`."""
        from . import participants

        return participants.start(self, "worker", model_id, data, target=target, stake=stake)

    def join_validator(self, model_id: int, data: Any, *, target: str | None = None):
        """Run a validator of ``model_id`` (this session's key must be one of the model's
        validators) in this process, judging on its held-out ``data``."""
        from . import participants

        return participants.start(self, "validator", model_id, data, target=target)

    def participants(self, role: str | None = None, model_id: int | None = None) -> list:
        """The workers and validators this process runs (see `join_worker`)."""
        from . import participants

        return participants.running(role, model_id)

    def leave(self, role: str = "worker", model_id: int | None = None) -> list:
        """Stop this process's participants of ``role`` (of one model, or all) and unstake
        the workers' stakes; their final status."""
        return [p.leave() for p in self.participants(role, model_id)]

    def run_agent(self, role: str, args: Sequence[str]) -> None:
        """Run a worker or validator in this process until interrupted (the key never
        reaches a command line). Its own ``--key`` options (repeated: several agents in this
        process) or ``--key-file`` replace this session's key."""
        from .agents import validator, worker

        module = {"worker": worker, "validator": validator}[role]
        own = any(a.split("=", 1)[0] in ("--key", "--key-file") for a in args)
        keys = [] if own else ["--key", self._key]
        # an agent reads the protocol from DFML_FROM_BLOCK unless its line says otherwise
        with _environ("DFML_FROM_BLOCK", None if self.from_block is None else str(self.from_block)):
            module.main(["--url", self.url, "--storage", self.storage, *keys, *args])


_GENERIC_SS58 = 42  # the generic Substrate address format, until the chain says its own


def _first(from_block: int | None) -> int:
    return max(1, int(from_block or 0))


@contextlib.contextmanager
def _environ(name: str, value: str | None) -> Iterator[None]:
    """``name`` set to ``value`` (None: unset) in this process's environment within the block."""
    import os

    before = os.environ.get(name)
    if value is None:
        os.environ.pop(name, None)
    else:
        os.environ[name] = value
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = before


def _catch_up_reporter(
    progress: Progress | None, first: int, at_least: int
) -> Callable[[int, int], None] | None:
    """An indexer ``(done, total)`` callback that reports a catch-up of ``at_least`` blocks
    or more through ``progress``: when it starts, every `_REPORT_EVERY` s and at its end,
    with its rate and the time left."""
    if progress is None:
        return None
    started = time.monotonic()
    last = [-1.0]

    def report(done: int, total: int) -> None:
        if total < at_least:
            return
        now = time.monotonic()
        if done != total and done != 1 and now - last[0] < _REPORT_EVERY:
            return
        last[0] = now
        blocks = f"indexing blocks {first}..{first + total - 1}: {done}/{total}"
        if done == 1:
            progress(f"{blocks} (catching up the protocol's history)", done / total)
            return
        rate = done / max(now - started, 1e-9)
        left = "" if done == total else f", about {(total - done) / rate:.0f} s left"
        progress(f"{blocks} ({rate:.0f} blocks/s{left})", done / total)

    return report


def _next_in_plan(state: State, rnd: RoundInfo) -> RoundInfo | None:
    """The round a StartRounds plan opened as ``rnd`` ended (the state records it), or None."""
    return None if rnd.next_round_id is None else state.round(rnd.next_round_id)


def byte_progress(what: str, progress: Progress | None) -> Callable[[int, int], None] | None:
    """A ``(done, total)`` callback reporting ``what`` every 10% through ``progress``."""
    if progress is None:
        return None
    shown = [-1]

    def report(done: int, total: int) -> None:
        step = int(10 * done / total) if total else 10
        if step > shown[0]:
            shown[0] = step
            progress(f"{what}: {done / 2**20:.1f} of {total / 2**20:.1f} MiB", step / 10)

    return report


def _model_artifacts(
    model: Any, label: str | None = None, features: Sequence[str] = ()
) -> tuple[bytes, bytes, str]:
    """(architecture spec, initial weights, a default name) of a Keras model or of the path
    of a saved one (its compile config kept: a saved compiled model loads compiled)."""
    from . import fl

    if isinstance(model, str | Path):
        p = Path(model)
        if not p.exists():
            raise UsageError(f"no model file at {model}", hint="save it with model.save('m.keras')")
        if p.suffix not in (".keras", ".h5"):
            raise UsageError(
                f"{model} is not a Keras model file (.keras)",
                hint="save it with model.save('m.keras')",
            )
        from .fl._tf import keras

        try:
            loaded = keras().models.load_model(p)
        except Exception as exc:  # noqa: BLE001 - Keras raises many kinds for a bad file
            raise UsageError(
                f"{model} could not be loaded as a Keras model: {exc}",
                hint="save it with model.save('m.keras') from Keras 3",
            ) from None
        spec = fl.model_to_spec(loaded, label=label, features=features)
        return spec, fl.weights_to_bytes(loaded.get_weights()), p.stem
    if not hasattr(model, "get_weights") or not hasattr(model, "get_config"):
        raise UsageError(
            f"{type(model).__name__} is not a Keras model or the path of a saved one",
            hint="pass a keras.Model, or save it with model.save('m.keras') and pass the path",
        )
    name = getattr(model, "name", None) or "model"
    spec = fl.model_to_spec(model, label=label, features=features)
    return spec, fl.weights_to_bytes(model.get_weights()), name


__all__ = ["Progress", "Session", "byte_progress"]
