"""The worker: stakes on models to become eligible, and when a round selects it, trains the
global model on its private data and submits only the weight update (a CID).

Its data is its own (``data``: a CSV/Parquet/.npz file, a folder of images, or from Python
arrays, a DataFrame or a tf.data.Dataset; see `fl.load_data`) or a partition of a bundled
dataset (demos and tests). Before it stakes on a model it checks its data against the model's
data contract, and stakes nothing on a model its data does not fit. Its data never leaves this
process. ``attack`` makes it a poisoner, for robustness demos.
"""

from __future__ import annotations

import argparse
import hashlib
import secrets
import sys
import time
from dataclasses import dataclass, field

import numpy as np
from substrateinterface import Keypair

from ..errors import DfmlError
from ..protocol import calls as C
from ..protocol import encoders
from ..protocol.state import State
from .base import LIVE_MODEL, Agent, add_from_block_option, agent_keys, run_agent

ATTACKS = ("none", "label_flip", "scale")
# A proxied remark weighs ~0.4 G of the runtime's 350 G per extrinsic: 870 fit in one batch
# (benchmarks/bench_batching.py); stay well below.
MAX_BATCH = 400
PROXY_CHUNK = 32  # members made proxies of their host at a time
# What a worker trains with at most, whatever a round's starter asks: a hostile learning rate
# makes every honest update non-finite (and so rejected), which must cost the worker nothing.
MAX_EPOCHS = 100
MAX_BATCH_SIZE = 8192
MAX_LEARNING_RATE = 1.0
# The most of its stake a worker risks on one rejected update unless its operator says more.
MAX_SLASH_PERMILL = 500_000
PROTOCOL_CALL = {
    "key": "announce_key",
    "stake": "stake",
    "update": "submit_update",
    "updates": "submit_updates",
    "delegate": "delegate_updates",
    "reveal": "reveal_seeds",
}
# An update at most this big waits to be uploaded with the host's others in one request;
# a bigger one goes alone, as it is trained (a host never holds many big ones at once)
BULK_UPLOAD_BYTES = 4 << 20


@dataclass
class Identity:
    """One worker: its account, its private data and its secure-aggregation key.

    ``source`` is what its data is read from (a path, a DataFrame, an (x, y) pair, ...), with
    ``target`` its label column; it is read once per model architecture, against that model's
    data contract (``fitted``: architecture CID -> (x, y), or the mismatch)."""

    key: Keypair
    index: int
    source: object
    target: str | None
    attack: str
    secret: object  # nacl PrivateKey
    public_key: str
    done: set[int] = field(default_factory=set)
    # round id -> its submit call, uploaded and sent but not yet in a block the chain kept
    # (resent as it is, never trained and uploaded again)
    pending: dict[int, object] = field(default_factory=dict)
    # round id -> (cid, examples) of a pending update without a deposit: its host may send it
    # in one submit_updates with the others' (when this worker delegated its updates to it)
    entries: dict[int, tuple[str, int]] = field(default_factory=dict)
    refused: set[tuple[str, int]] = field(default_factory=set)
    revealed: set[tuple[str, int]] = field(default_factory=set)  # secure rounds' reveals sent
    fitted: dict[str, object] = field(default_factory=dict)

    @property
    def address(self) -> str:
        return self.key.ss58_address


class Worker(Agent):
    """One worker, or several sharing a process (``keys``: one identity per key, partitions
    ``index``, ``index + 1``, ...). A host of several signs one extrinsic per step for all of
    them: the first account is every other's proxy, so N updates cost one transaction."""

    role = "worker"

    def __init__(
        self,
        url: str,
        storage: str,
        key: str | list[str],
        *,
        dataset: str = "digits",
        data: object = None,
        target: str | None = None,
        index: int = 0,
        workers: int = 1,
        partition: str = "iid",
        seed: int = 0,
        stake: int = 10 * 10**12,
        attack: str | list[str] = "none",
        models: list[int] | None = None,
        max_slash_permill: int = MAX_SLASH_PERMILL,
        **kw,
    ):
        keys = [key] if isinstance(key, str) else list(key)
        attacks = [attack] * len(keys) if isinstance(attack, str) else list(attack)
        if not keys or len(attacks) != len(keys):
            raise ValueError("give one attack per key")
        super().__init__(url, storage, keys[0], **kw)
        from nacl.public import PrivateKey

        from .. import fl

        for a in attacks:
            if a not in ATTACKS:
                raise ValueError(f"unknown attack {a!r}; one of {ATTACKS}")
        if data is not None and len(keys) != 1:
            raise ValueError("a worker on its own data runs one key")
        if data is None and index + len(keys) > workers:
            raise ValueError(f"partitions {index}..{index + len(keys) - 1} exceed {workers}")
        self.stake_amount = stake
        self.models = None if models is None else set(models)
        self.max_slash_permill = max_slash_permill
        # ProxyFL: each identity's private model per model id, kept here and never sent
        self._private: dict[tuple[str, int], list] = {}
        sources: list[object] = [data]
        if data is None:  # partitions of a bundled dataset
            bundled = fl.load_dataset(dataset, seed=seed)
            scheme, _, alpha = partition.partition(":")
            parts = fl.partition(
                bundled.y_train, workers, scheme, float(alpha) if alpha else 0.5, seed=seed
            )
            sources = []
            for k, att in enumerate(attacks):
                idx = parts[index + k]
                x, y = bundled.x_train[idx], bundled.y_train[idx]
                if att == "label_flip":
                    y = (bundled.num_classes - 1 - y).astype(y.dtype)
                sources.append((x, y))
        self.identities: list[Identity] = []
        for k, (uri, att) in enumerate(zip(keys, attacks, strict=True)):
            # the X25519 key for secure aggregation's pairwise masks; announced on chain
            secret = PrivateKey.generate()
            self.identities.append(
                Identity(
                    key=self.key if k == 0 else self.chain.keypair(uri),
                    index=index + k,
                    source=sources[k],
                    target=target,
                    attack=att,
                    secret=secret,
                    public_key="0x" + bytes(secret.public_key).hex(),
                )
            )
            if data is None:
                self.log.info(
                    "%s: private partition %d/%d, %d examples",
                    self.identities[-1].address,
                    index + k,
                    workers,
                    len(sources[k][1]),
                )
            else:
                self.log.info("%s: its own data (%s)", self.identities[-1].address, _what(data))
        self._proxied = len(self.identities) == 1
        self._base: tuple[str, list] = ("", [])

    def ensure_proxies(self) -> None:
        """Each further identity lets the first act for it (one transaction each, once; none
        on a dev network, whose chain starts with them made)."""
        if self._proxied:
            return
        lead = self.address

        def without_proxy(idents):  # one read for them all
            found = self.chain.proxies_of([i.address for i in idents])
            return [i for i in idents if lead not in found[self.chain.address(i.address)]]

        missing = without_proxy(self.identities[1:])
        # a chunk at a time into the pool (they share the next block(s)): a dev chain checks
        # each transaction as it arrives, and hundreds at once would leave it deaf to others
        for i in range(0, len(missing), PROXY_CHUNK):
            chunk = missing[i : i + PROXY_CHUNK]
            for ident in chunk:
                call = self.chain.add_proxy_call(lead)
                self.chain.submit_nowait(self.chain.sign(ident.key, call))
            deadline = time.monotonic() + 120
            while chunk and time.monotonic() < deadline and not self.stopping.is_set():
                chunk = without_proxy(chunk)
                if chunk:
                    time.sleep(0.5)
        missing = without_proxy(missing)
        if missing:
            raise DfmlError(
                f"{len(missing)} workers could not make {lead} their proxy",
                hint="check their balances (a proxy needs a deposit) and the chain's logs",
            )
        self.log.info("%d workers act through %s", len(self.identities) - 1, lead)
        self._proxied = True

    def step(self, state: State) -> None:
        self.ensure_proxies()
        calls: list[tuple[Identity, str, int, object]] = []  # (who, what, about, call)
        # read once for every identity: a host of hundreds must not scan the state per member
        keys = state.public_keys([i.address for i in self.identities])
        staked: dict[str, set[int]] = {}  # account -> models it has stake on
        for st in state.stakes():
            if st.amount > 0:
                staked.setdefault(st.account, set()).add(st.model_id)
        models = state.models()
        for ident in self.identities:
            if keys.get(ident.address) != ident.public_key and ("key", 0) not in ident.refused:
                announce = self.chain.remark_call(encoders.announce_key(ident.public_key))
                calls.append((ident, "key", 0, announce))
            mine = staked.get(ident.address, set())
            for model in models:
                if (
                    model.status in LIVE_MODEL
                    and model.id not in mine
                    and self.stake_amount > 0
                    and ("stake", model.id) not in ident.refused
                    and self.may_stake(model, ident)
                ):
                    if model.stake_asset is not None:  # the pool must exist natively first
                        self.proto.ensure_provider(self.key, model.pool)
                    stake = self.proto.compose(
                        encoders.stake(model.id, self.stake_amount, model.stake_asset),
                        [(model.pool, self.stake_amount, model.stake_asset)],
                    )
                    calls.append((ident, "stake", model.id, stake))
        lead = self.identities[0]
        delegated = state.delegates([i.address for i in self.identities[1:]])
        for ident in self.identities[1:]:
            # each member lets its host send its updates in one call with the others' (once)
            if (
                delegated.get(ident.address) != lead.address
                and ("delegate", 0) not in ident.refused
            ):
                delegate = self.chain.remark_call(encoders.delegate_updates(lead.address))
                calls.append((ident, "delegate", 0, delegate))
        open_rounds = state.rounds(status=("open",))
        open_ids = {r.round_id for r in open_rounds}
        for ident in self.identities:  # a round that closed takes no more updates
            for rid in [r for r in ident.pending if r not in open_ids]:
                del ident.pending[rid]
                ident.entries.pop(rid, None)
        due = []
        for rnd in open_rounds:
            selected, submitted = set(rnd.selected), set(rnd.submitted)
            for ident in self.identities:
                if (
                    ident.address in selected
                    and ident.address not in submitted
                    and rnd.round_id not in ident.done
                ):
                    due.append((rnd, ident))
        self.train_updates(state, [(r, i) for r, i in due if r.round_id not in i.pending])
        bulk: dict[int, list[tuple[Identity, str, int]]] = {}
        for rnd, ident in due:
            call = ident.pending.get(rnd.round_id)
            if call is None:
                continue
            entry = ident.entries.get(rnd.round_id)
            if entry is not None and (
                ident is lead or delegated.get(ident.address) == lead.address
            ):
                bulk.setdefault(rnd.round_id, []).append((ident, *entry))
            else:
                calls.append((ident, "update", rnd.round_id, call))
        for rid, items in bulk.items():
            if len(items) == 1:  # one update: as submit_update (its own or through its proxy)
                ident = items[0][0]
                calls.append((ident, "update", rid, ident.pending[rid]))
                continue
            at = 0
            for remark in encoders.submit_updates(rid, [(i.address, c, n) for i, c, n in items]):
                k = len(C.decode_call(remark).updates)  # type: ignore[attr-defined]
                members = [i for i, _, _ in items[at : at + k]]
                calls.append((lead, "updates", (rid, members), self.chain.remark_call(remark)))
                at += k
        calls += self.reveals(state)
        if calls:
            self.send(calls)
        ours = {m for i in self.identities for m in staked.get(i.address, ())}
        ready = [m for m in models if m.status in LIVE_MODEL and m.id in ours and m.global_cid]
        self.warm_up(ready, self._train_once)

    def stake_refusal(self, model) -> str | None:
        """Why this worker's policy keeps its operator's stake off ``model``, or None.

        Only the models the operator named (``models``), or else models whose pool is a real
        multisig (two or more validators, none of them the owner alone), whose slash rate is
        within ``max_slash_permill`` and whose minimum stake is within the stake it has to give.
        """
        if self.models is not None:
            return None if model.id in self.models else "not one of the models this worker serves"
        if len(model.validators) < 2 or model.pool == model.owner:
            return "its pool is not a multisig of two or more validators"
        slash = int(model.reward_policy.get("slash_permill", 0))
        if slash > self.max_slash_permill:
            return f"it slashes {slash / 10_000:g}% of a rejected worker's stake"
        need = model.eligibility.get("amount", 0) if model.eligibility else 0
        if (
            model.eligibility
            and model.eligibility.get("type") == "min_stake"
            and need > (self.stake_amount)
        ):
            return f"it asks a stake of {need}, more than this worker's {self.stake_amount}"
        return None

    def data_for(self, ident: Identity, model) -> tuple[np.ndarray, np.ndarray]:
        """``ident``'s data read against ``model``'s data contract (once per architecture);
        DataMismatch if it does not fit."""
        from .. import fl

        found = ident.fitted.get(model.architecture_cid)
        if found is None:
            contract = fl.spec_contract(self.spec(model.architecture_cid))
            try:
                found = fl.load_data(
                    ident.source,
                    target=ident.target,
                    contract=contract,
                    min_examples=fl.MIN_TRAIN_EXAMPLES,
                )
            except DfmlError as err:
                found = err
            ident.fitted[model.architecture_cid] = found
        if isinstance(found, DfmlError):
            raise found
        return found  # type: ignore[return-value]

    def data_refusal(self, model, ident: Identity) -> str | None:
        """Why ``ident``'s data cannot train ``model`` (its contract), or None."""
        try:
            self.data_for(ident, model)
        except DfmlError as err:
            return f"its data does not fit the model: {err} ({err.hint})"
        return None

    def may_stake(self, model, ident: Identity) -> bool:
        reason = self.stake_refusal(model) or self.data_refusal(model, ident)
        if reason is None:
            return True
        if ("policy", model.id) not in ident.refused:
            ident.refused.add(("policy", model.id))
            self.log.info("%s: not staking on model %d: %s", ident.address, model.id, reason)
        return False

    def _train_once(self, model) -> None:
        """A throw-away step on a few examples: builds and traces the model's train step."""
        from .. import fl

        ident = self.identities[0]
        spec = self.spec(model.architecture_cid)
        base = self.base_weights(model.global_cid, self.weights_limit(model))
        x, y = self.data_for(ident, model)
        fl.train_local(spec, base, x[:8], y[:8])

    def send(self, calls: list[tuple[Identity, str, int, object]]) -> None:
        """One extrinsic for every call of this step (up to `MAX_BATCH`), signed by the first
        identity; the others' calls go through it as their proxy. Each call's fate is read
        back from the protocol state (a rejected one is logged and not retried)."""
        lead = self.identities[0]
        # the others' calls go first: a proxied call never fails the batch (its own result
        # is in its ProxyExecuted event), while a failing call of the signer's stops the rest.
        # Then the signer's submit_updates (plain remarks, which cannot fail), which carry the
        # others' updates: a failing transfer of the signer's own (a stake, a deposit) must not
        # stop them, or they would be taken as sent and lost for the round
        mine = [c for c in calls if c[0] is lead]
        calls = (
            [c for c in calls if c[0] is not lead]
            + [c for c in mine if c[1] == "updates"]
            + [c for c in mine if c[1] != "updates"]
        )
        for i in range(0, len(calls), MAX_BATCH):
            self._send(calls[i : i + MAX_BATCH])

    def _send(self, calls: list[tuple[Identity, str, int, object]]) -> None:
        lead = self.identities[0]
        wrapped = [
            call if ident is lead else self.chain.proxy_call(ident.address, call)
            for ident, _, _, call in calls
        ]
        outer = wrapped[0] if len(wrapped) == 1 else self.chain.batch_call(wrapped)
        receipt = self.chain.submit(self.key, outer)
        state = self.proto.indexer.wait_for(receipt.block_number)
        if self.proto.replaced(receipt):
            # the chain kept another block at that height: none of these calls took effect.
            # Nothing is marked done, so the next step sends them again (updates as uploaded)
            self.log.warning(
                "block %d, which included %d call(s), was replaced by another block at that "
                "height: sending them again",
                receipt.block_number,
                len(calls),
            )
            for ident, what, about, _ in calls:
                if what == "reveal":
                    ident.revealed.discard(("reveal", about))
            return
        found = state.errors_at(receipt.block_number, receipt.extrinsic_index)
        errors = {(e.account, e.call): e.reason for e in found}
        # a submit_updates is a remark of the batch itself, at its position there; each of
        # its entries is refused under its worker, as a submit_update at that position
        placed = {(e.account, e.call, e.batch_index): e.reason for e in found}
        for at, (ident, what, about, _) in enumerate(calls):
            if what == "updates":
                rid, members = about
                whole = placed.get((ident.address, "submit_updates", at))
                taken = 0
                for member in members:
                    member.done.add(rid)
                    member.pending.pop(rid, None)
                    member.entries.pop(rid, None)
                    reason = whole or placed.get((member.address, "submit_update", at))
                    if reason is not None:
                        member.refused.add(("update", rid))
                        self.log.warning("%s: update %s refused: %s", member.address, rid, reason)
                    else:
                        taken += 1
                self.log.info(
                    "round %d: %d of %d updates submitted in one call", rid, taken, len(members)
                )
                continue
            if what == "update":
                ident.done.add(about)
                ident.pending.pop(about, None)
                ident.entries.pop(about, None)
            reason = errors.get((ident.address, PROTOCOL_CALL[what]))
            if reason is not None:
                ident.refused.add((what, about))
                self.log.warning("%s: %s %s refused: %s", ident.address, what, about, reason)
            elif what == "stake":
                self.log.info("%s staked %d on model %d", ident.address, self.stake_amount, about)
            elif what == "update":
                self.log.info("%s: update for round %d submitted", ident.address, about)

    def train_update(self, state: State, rnd, ident: Identity | None = None):
        """Train ``ident`` (default: the first) on the round's base model; upload the update
        and return the submit call (None when it sends none: see ``_train``)."""
        ident = ident or self.identities[0]
        self.train_updates(state, [(rnd, ident)])
        return ident.pending.get(rnd.round_id)

    def train_updates(self, state: State, due: list[tuple[object, Identity]]) -> None:
        """Train each (round, identity) pair, upload the updates (the small ones in one
        request) and leave each one's submit call in ``ident.pending`` (and, without a
        deposit, its CID and examples in ``ident.entries``, for submit_updates)."""
        from .. import fl

        waiting: list[tuple[object, Identity, tuple, bytes]] = []
        for rnd, ident in due:
            trained = self._train(state, rnd, ident)
            if trained is None:
                continue
            data = fl.weights_to_bytes(trained[2])
            if len(data) > BULK_UPLOAD_BYTES:
                self._uploaded(rnd, ident, trained, self.store.put(data))
            else:
                waiting.append((rnd, ident, trained, data))
        if waiting:
            cids = self.store.put_many([data for *_, data in waiting])
            for (rnd, ident, trained, _), cid in zip(waiting, cids, strict=True):
                self._uploaded(rnd, ident, trained, cid)

    def _uploaded(self, rnd, ident: Identity, trained: tuple, cid: str) -> None:
        n, model, _, accuracy = trained
        self.log.info(
            "%s round %d: trained on %d examples (train acc %.3f), update %s",
            ident.address,
            rnd.round_id,
            n,
            accuracy,
            cid,
        )
        deposit = model.deposit if model.reward_policy["kind"] == "drt" else 0
        remark = encoders.submit_update(rnd.round_id, cid, n, deposit)
        if deposit:  # drt: the deposit travels with the update in one batch_all (both or none)
            self.log.info("%s round %d: depositing %d", ident.address, rnd.round_id, deposit)
            call = self.proto.compose(remark, [(model.pool, deposit, model.stake_asset)])
        else:
            call = self.chain.remark_call(remark)
            ident.entries[rnd.round_id] = (cid, n)
        ident.pending[rnd.round_id] = call

    def _train(self, state: State, rnd, ident: Identity):
        """``ident``'s update for ``rnd``: (examples, model, weights, train accuracy), or None
        when it sends none (a hostile hint, data that does not fit, diverged training, a secure
        round it cannot mask: each logged and the round marked done)."""
        from .. import fl

        model = state.model(rnd.model_id)
        spec = self.spec(model.architecture_cid)
        base = self.base_weights(rnd.base_cid, self.weights_limit(model))
        hints = rnd.hints
        problem = hint_problem(hints)
        if problem is not None:
            ident.done.add(rnd.round_id)
            self.log.warning("%s round %d: not training: %s", ident.address, rnd.round_id, problem)
            return None
        try:
            x, y = self.data_for(ident, model)
        except DfmlError as err:  # staked before the model's data contract was known
            ident.done.add(rnd.round_id)
            self.log.warning("%s round %d: not training: %s", ident.address, rnd.round_id, err)
            return None
        seed = int.from_bytes(hashlib.sha256(f"{rnd.seed}:{ident.address}".encode()).digest()[:4])
        lr = float(hints.get("learning_rate", 0))
        # what the model's strategy asks of its workers (FedProx's mu, as the model set it)
        client = fl.strategy_for(model.strategy, model.strategy_params).client_config()
        epochs, batch_size = int(hints.get("epochs", 1)), int(hints.get("batch_size", 32))
        if client.get("proxyfl"):
            # ProxyFL: the private model never leaves this process; only the proxy is sent
            key = (ident.address, model.id)
            new, self._private[key], n = fl.train_proxyfl(
                spec, base, self._private.get(key), x, y, epochs, batch_size,
                lr if lr > 0 else None, alpha=client["alpha"], beta=client["beta"], seed=seed,
            )  # fmt: skip
            metrics: dict[str, float] = {}
        else:
            new, n, metrics = fl.train_local(
                spec,
                base,
                x,
                y,
                epochs=epochs,
                batch_size=batch_size,
                lr=lr if lr > 0 else None,  # 0: the model's own (its owner's optimizer)
                proximal_mu=float(client.get("proximal_mu", 0.0)),
                seed=seed,
            )
        if rnd.dp:
            # the noise seed stays secret: whoever knew it could subtract the noise
            new, _ = fl.clip_and_noise(
                base,
                new,
                rnd.dp["clip_norm"],
                rnd.dp["noise_multiplier"],
                seed=secrets.randbits(63),
            )
        if ident.attack == "none" and not all(np.all(np.isfinite(w)) for w in new):
            # a rejected update could be slashed; sending nothing costs nothing
            ident.done.add(rnd.round_id)
            self.log.warning(
                "%s round %d: training diverged (non-finite weights): no update sent",
                ident.address,
                rnd.round_id,
            )
            return None
        if ident.attack == "scale":
            new = [g + np.asarray(-10.0, g.dtype) * (w - g) for g, w in zip(base, new, strict=True)]
        if model.strategy.endswith(":secure"):
            new = self.mask(state, rnd, new, n, ident)
            if new is None:
                ident.done.add(rnd.round_id)
                return None
        return n, model, new, metrics.get("train_accuracy", float("nan"))

    def base_weights(self, cid: str, max_bytes: int | None = None):
        """The round's global weights, fetched once for every identity of this host."""
        from .. import fl

        if self._base[0] != cid:
            self._base = (cid, fl.weights_from_bytes(self.store.get(cid, max_bytes=max_bytes)))
        return self._base[1]

    def reveals(self, state: State) -> list[tuple[Identity, str, int, object]]:
        """For each secure round that stopped taking updates with this worker's update in
        it: its own mask seed and its pairwise seeds with the selected workers that did not
        submit (SecAgg's recovery: validators can then read the sum without them)."""
        from .. import fl

        out: list[tuple[Identity, str, int, object]] = []
        for rnd in state.rounds(status=("aggregating",)):
            model = state.model(rnd.model_id)
            if model is None or not model.strategy.endswith(":secure"):
                continue
            dropped = sorted(set(rnd.selected) - set(rnd.submitted))
            keys = state.public_keys(dropped)
            for ident in self.identities:
                if (
                    ident.address not in rnd.submitted
                    or ident.address in rnd.reveals
                    or ("reveal", rnd.round_id) in ident.refused
                    or ("reveal", rnd.round_id) in ident.revealed
                ):
                    continue
                context = _mask_context(rnd)
                peers = {
                    peer: fl.x25519_shared_seed(
                        bytes(ident.secret), bytes.fromhex(keys[peer][2:]), context
                    )
                    for peer in dropped
                    if peer in keys
                }
                own = fl.self_seed(bytes(ident.secret), context)
                call = self.chain.remark_call(encoders.reveal_seeds(rnd.round_id, own, peers))
                ident.revealed.add(("reveal", rnd.round_id))
                if dropped:
                    self.log.info(
                        "%s round %d: revealing seeds for %d dropped peer(s)",
                        ident.address,
                        rnd.round_id,
                        len(dropped),
                    )
                out.append((ident, "reveal", rnd.round_id, call))
        return out

    def mask(self, state: State, rnd, weights, n: int, ident: Identity):
        """``n × weights`` plus pairwise masks with every other selected worker: only the sum
        of all selected workers' updates can be read, and only once all of them submitted."""
        from .. import fl

        keys = state.public_keys(rnd.selected)
        missing = [a for a in rnd.selected if a not in keys]
        if missing:
            self.log.warning(
                "round %d: no announced key for %s; cannot mask", rnd.round_id, missing
            )
            return None
        context = _mask_context(rnd)
        seeds = {
            peer: fl.x25519_shared_seed(bytes(ident.secret), bytes.fromhex(key[2:]), context)
            for peer, key in keys.items()
            if peer != ident.address
        }
        own = fl.self_seed(bytes(ident.secret), context)  # revealed once the update counts
        return fl.mask_update(ident.address, weights, seeds, float(n), own_seed=own).layers


def _mask_context(rnd) -> bytes:
    """What binds a round's mask seeds to the round."""
    return f"dfml-round:{rnd.round_id}:{rnd.seed}".encode()


def _what(data: object) -> str:
    if isinstance(data, str):
        return data
    shape = getattr(data, "shape", None)
    return f"a {type(data).__name__}" + (f" of shape {shape}" if shape is not None else "")


def hint_problem(hints: dict) -> str | None:
    """Why a round's training hints are outside what a worker accepts, or None."""
    epochs = int(hints.get("epochs", 1))
    batch = int(hints.get("batch_size", 32))
    lr = float(hints.get("learning_rate", 0))
    if not 1 <= epochs <= MAX_EPOCHS:
        return f"{epochs} epochs (at most {MAX_EPOCHS})"
    if not 1 <= batch <= MAX_BATCH_SIZE:
        return f"batch size {batch} (at most {MAX_BATCH_SIZE})"
    if not 0 <= lr <= MAX_LEARNING_RATE:  # 0: the model's own optimizer's rate
        return f"learning rate {lr:g} (in [0, {MAX_LEARNING_RATE:g}])"
    return None


def build_parser(prog: str = "dfml worker") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=__doc__)
    p.add_argument("--url", required=True)
    p.add_argument("--storage", required=True)
    p.add_argument("--key-file", default=None, help="file holding the key (chmod 600)")
    p.add_argument(
        "--key",
        default=None,
        action="append",
        help="the worker's key; repeat it to run several workers in this process "
        "(partitions --index, --index+1, ...; the first key signs for all as their proxy)",
    )
    p.add_argument(
        "--data",
        default=None,
        help="its own data: a CSV or Parquet file (with --target), a .npz with x and y, or a "
        "folder of images with one sub-folder per class; default: a --dataset partition",
    )
    p.add_argument("--target", default=None, help="the label column of a CSV/Parquet file")
    p.add_argument("--dataset", default="digits", help="a bundled dataset (demos and tests)")
    p.add_argument("--index", type=int, default=0, help="this worker's (first) partition")
    p.add_argument("--workers", type=int, default=1, help="how many partitions")
    p.add_argument("--partition", default="iid", help="iid or dirichlet:ALPHA")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--stake", type=int, default=10 * 10**12)
    p.add_argument(
        "--attack",
        choices=ATTACKS,
        action="append",
        help="none, label_flip or scale; once for all workers here, or once per --key",
    )
    p.add_argument(
        "--model",
        type=int,
        action="append",
        dest="models",
        help="stake only on this model (repeat for several); default: models the policy allows",
    )
    p.add_argument(
        "--max-slash-permill",
        type=int,
        default=MAX_SLASH_PERMILL,
        help="never stake on a model that slashes more of a rejected update's stake (ppm)",
    )
    p.add_argument("--index-db", default=None)
    p.add_argument("--poll", type=float, default=2.0, help="longest wait between steps (s)")
    add_from_block_option(p)
    return p


def main(argv: list[str] | None = None) -> int:
    p = build_parser()
    a = p.parse_args(argv)
    keys = agent_keys(a.key, a.key_file, argv)
    attacks = a.attack or ["none"]
    if len(attacks) == 1:
        attacks = attacks * len(keys)
    if len(attacks) != len(keys):
        p.error(f"give --attack once, or once per --key ({len(keys)})")
    worker = Worker(
        a.url,
        a.storage,
        keys,
        dataset=a.dataset,
        data=a.data,
        target=a.target,
        index=a.index,
        workers=a.workers,
        partition=a.partition,
        seed=a.seed,
        stake=a.stake,
        attack=attacks,
        models=a.models,
        max_slash_permill=a.max_slash_permill,
        index_db=a.index_db,
        poll=a.poll,
        from_block=a.from_block,
    )
    return run_agent(worker)


if __name__ == "__main__":
    sys.exit(main())
