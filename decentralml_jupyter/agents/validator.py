"""The validator: when a round of one of its models closes, it fetches every update, checks it
(shapes, finite values, norm outliers), aggregates the accepted ones with the model's strategy,
scores each contribution on held-out data, uploads the aggregate and attests. It also approves
the payouts its pool owes, each derived from its own replay of the chain.

Validators of a model hold the same held-out split and compute deterministically, so honest
validators attest identical results and k of them finalize the round.

One process may host several validators (``key``: a list; ``dfml validator --key //Dev1 --key
//Dev2``): they share its chain connection, indexer, storage client, held-out data and
TensorFlow runtime, and each signs its own attestations and payout approvals with its own key.

Each duty (a round's attestation, a payout's approval) has k primaries, rotating with the
round or payout id; the other validators are backups that act only if the duty is still undone
``backup_grace`` seconds after they first saw it (a primary offline, or disagreeing). Every
extrinsic costs the chain a share of its next block, so an n-th attestation that can only be
refused (the round finalized with the k-th) is not sent.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import logging
import os
import statistics
import sys
import time
from typing import NamedTuple

import numpy as np

from ..errors import DataMismatch, DfmlError, FlError, StorageError
from ..fl.privacy import MaskedUpdate
from ..protocol import calls as C
from ..protocol import encoders
from ..protocol.accounts import pool_threshold
from ..protocol.client import ProtocolRejected
from ..protocol.state import State
from ..storage.store import StorageTimeout, StorageUnavailable
from .base import LIVE_MODEL, Agent, add_from_block_option, agent_keys, run_agent

WAIT = object()  # judge(): the round cannot be judged yet, but will be


class Judged(NamedTuple):
    """A validator's verdict on a round, before it is attested."""

    weights: list  # the new global weights (the base when nothing was accepted)
    metrics: dict[str, float]  # theirs on the validator's held-out data
    contributions: dict[str, float]  # accepted worker -> non-negative share
    rejected: dict[str, str]  # rejected worker -> reason
    server_state: bytes | None = None  # a stateful strategy's state after the round
    base_metric: float | None = None  # the model's metric of the round's base, same data


# An accepted update may move the model at most this many times the median update's distance:
# scaled (boosted) updates stand out, honest non-IID ones stay well inside.
NORM_OUTLIER_FACTOR = 4.0
# a linear strategy's updates kept in memory between passes up to this many bytes; beyond, it
# reads them again one at a time (a few updates of a 100 M-parameter model stream)
KEEP_BYTES = 256 << 20
BACKUP_GRACE = 10.0  # seconds a backup validator leaves a duty to its primaries
# The most examples one update may claim when the validator judges on its own data (with a
# bundled dataset: its training split's size)
DEFAULT_MAX_EXAMPLES = 10_000_000
# the largest revealed test set a validator reads (a prediction market's; an .npz of x and y)
MAX_TEST_SET_BYTES = 256 << 20


def primaries(validators, salt: int) -> list[str]:
    """The k validators (k = the quorum: a strict majority) who act first on the duty ``salt``
    (a round or payout id): consecutive in account order, starting at ``salt`` mod n, so the
    work rotates and every honest validator derives the same list."""
    order = sorted(validators)
    if not order:
        return []
    k = pool_threshold(len(order))
    return [order[(salt + i) % len(order)] for i in range(k)]


class Verdict(NamedTuple):
    """A round judged and its aggregate stored: what an attestation of it sends."""

    cid: str  # the aggregate's
    call: object  # encoders.verdict(...): the attestation's remarks
    metrics: dict[str, float]
    accepted: int
    rejected: int
    judged_s: float  # how long judging and storing took


class Validator(Agent):
    """One validator, or several sharing a process (``key``: a list, one identity per key;
    ``members``, each a Validator of its own that shares this one's chain connection, indexer,
    storage client, held-out data and caches). Every identity does its own duties with its
    own key, in turn, on one step."""

    role = "validator"

    def __init__(
        self,
        url: str,
        storage: str,
        key: str | list[str],
        *,
        dataset: str = "digits",
        data: object = None,
        target: str | None = None,
        seed: int = 0,
        backup_grace: float = BACKUP_GRACE,
        max_examples: int | None = None,
        inline_max: int = C.MAX_INLINE,
        **kw,
    ):
        keys = [key] if isinstance(key, str) else list(key)
        if not keys:
            raise ValueError("give at least one key")
        super().__init__(url, storage, keys[0], **kw)
        self.backup_grace = backup_grace
        # verdicts judging more updates than this go in a table (parts + storage)
        self.inline_max = inline_max
        self._waiting: dict[tuple[str, int], float] = {}  # duty -> when this backup saw it
        self._prepared: dict[tuple[int, ...], tuple[str, object]] = {}  # payout approval calls
        self._approved: dict[int, str] = {}  # payout id -> the call hash this validator approved
        from .. import fl

        # its held-out data: its own (read against each model's data contract), or a bundled
        # dataset's validation split (demos and tests)
        self.target = target
        if data is None:
            bundled = fl.load_dataset(dataset, seed=seed)
            self.source: object = (bundled.x_val, bundled.y_val)
            self.max_examples = max_examples or len(bundled.y_train)
        else:
            self.source = data
            self.max_examples = max_examples or DEFAULT_MAX_EXAMPLES
        self._held_out: dict[str, object] = {}  # architecture (spec hash) -> (x, y) or error
        self._reader_pool = None  # threads reading updates ahead (see _judge)
        self.attested: set[int] = set()
        self.scored: set[int] = set()  # markets this identity scored, or cannot score
        # round id -> this process's Verdict on it (None: it abstains), shared by its members
        self._verdicts: dict[int, Verdict | None] = {}
        self.members: list[Validator] = [self]
        for uri in keys[1:]:
            self.members.append(self._member(uri))
        if len({m.address for m in self.members}) != len(self.members):
            raise ValueError("the same validator key twice")
        if len(self.members) > 1:  # whose is each line of the log
            for m in self.members:
                m.log = logging.getLogger(f"dfml.validator.{m.address[:8]}")
            self.log.info("%d validators in this process", len(self.members))

    def _member(self, uri: str) -> Validator:
        """Another validator identity hosted in this process: its own key and duty
        bookkeeping; this one's chain connection, indexer, storage client, held-out data and
        caches (the same objects, not copies)."""
        member = copy.copy(self)
        member.key = self.chain.keypair(uri)
        member.address = member.key.ss58_address
        member.attested = set()
        member.scored = set()
        member._waiting, member._prepared, member._approved = {}, {}, {}
        member.members = [member]
        return member

    def step(self, state: State) -> None:
        """Every identity of this process does its duties in turn, each on the state its
        predecessors left (one's attestation or approval is on chain for the next). One that
        fails does not keep the others from theirs; the first failure is raised after."""
        failed: Exception | None = None
        for i, member in enumerate(self.members):
            try:
                member.duties(state if i == 0 else self.proto.state())
            except Exception as err:
                if len(self.members) == 1:
                    raise
                if failed is None:
                    failed = err
                else:
                    member.log.warning("step failed too: %s", err)
        live = {r.round_id for r in state.rounds(status=("aggregating",))}
        for rid in list(self._verdicts):  # verdicts on rounds done with
            if rid not in live:
                del self._verdicts[rid]
        if failed is not None:
            raise failed

    def duties(self, state: State) -> None:
        """This identity's duties on ``state``: attest the rounds due, approve the payouts
        due, warm up for its models."""
        attested = False
        for rnd in state.rounds(status=("aggregating",)):
            if rnd.round_id in self.attested:
                continue
            model = state.model(rnd.model_id)
            if self.address not in model.validators:
                continue
            if any(a.validator == self.address for a in rnd.attestations):
                self.attested.add(rnd.round_id)
                continue
            if self.due(("round", rnd.round_id), model.validators):
                self.attest(state, rnd)
                attested = True
        if attested:
            state = self.proto.state()  # approvals may have ridden with the attestations
        if self.score_markets(state):
            state = self.proto.state()
        self.approve_payouts(state)
        self._forget_done_duties(state)
        mine = [
            m
            for m in state.models()
            if m.status in LIVE_MODEL and self.address in m.validators and m.global_cid
        ]
        self.warm_up(mine, self._evaluate_global)

    def score_markets(self, state: State) -> bool:
        """Score the prediction markets of this validator's models whose test set was
        revealed: each rewarded round's base model and new model on the test set, in one
        market attestation. A test set that cannot be read or does not fit the model is not
        scored (if no quorum scores it in time, the bounty goes to the contributors)."""
        sent = False
        for mk in state.markets():
            if mk.status != "scoring" or mk.market_id in self.scored:
                continue
            model = state.model(mk.model_id)
            if self.address not in model.validators or self.address in mk.scored_by:
                self.scored.add(mk.market_id)
                continue
            if not self.due(("market", mk.market_id), model.validators):
                continue
            try:
                scores = self.market_scores(state, mk, model)
            except (DfmlError, ValueError) as err:
                self.scored.add(mk.market_id)
                self.log.warning("market %d: cannot score its test set: %s", mk.market_id, err)
                continue
            call = encoders.attest_market(mk.market_id, mk.test_cid, scores)
            try:
                self.proto.submit(self.key, call)
            except ProtocolRejected as err:
                self.log.info("market %d: scores refused: %s", mk.market_id, err)
            else:
                self.log.info(
                    "market %d: scored %d round(s) on test set %s: %s",
                    mk.market_id,
                    len(scores),
                    mk.test_cid,
                    ", ".join(f"{r}: {b:.4f} -> {n:.4f}" for r, (b, n) in scores.items()),
                )
                sent = True
            self.scored.add(mk.market_id)
        return sent

    def market_scores(self, state: State, mk, model) -> dict[int, tuple[float, float]]:
        """The model's metric of each rewarded round's base model and new model on the
        market's revealed test set (a negative metric counts as 0)."""
        import tempfile
        from pathlib import Path

        from .. import fl

        spec = self.spec(model.architecture_cid)
        raw = self.store.get(mk.test_cid, max_bytes=MAX_TEST_SET_BYTES)
        with tempfile.TemporaryDirectory(prefix="dfml-test-set-") as tmp:
            path = Path(tmp) / "test.npz"
            path.write_bytes(raw)
            x, y = fl.load_data(path, None, fl.spec_contract(spec))
        limit = self.weights_limit(model)

        def metric(cid: str) -> float:
            weights = fl.weights_from_bytes(self.store.get(cid, max_bytes=limit))
            found = fl.evaluate(spec, weights, x, y, model.metric)
            value = float(found.get(model.metric, found["loss"]))
            if not np.isfinite(value):
                raise FlError(f"the model's {model.metric} on the test set is {value}")
            return max(value, 0.0)

        scores = {}
        for rid in mk.rounds:
            rnd = state.round(rid)
            if rnd is None or not rnd.rewards:
                continue  # only rounds that rewarded anyone are scored
            scores[rid] = (metric(rnd.base_cid), metric(rnd.aggregate_cid))
        return scores

    def _evaluate_global(self, model) -> None:
        from .. import fl
        from ..fl import strategies

        weights = fl.weights_from_bytes(
            self.store.get(model.global_cid, max_bytes=self.weights_limit(model))
        )
        self.evaluate(self.spec(model.architecture_cid), weights)
        strategies.warm_up()  # the compiled FedAvg pass, before the first aggregation

    def _forget_done_duties(self, state: State) -> None:
        """Drop the backup timers of rounds no longer awaiting attestation and of payouts no
        longer pending (else the map grows by a few entries every round)."""
        live_rounds = {r.round_id for r in state.rounds(status=("open", "aggregating"))}
        pending = {p.id for p in state.pending_payouts()}
        scoring = {mk.market_id for mk in state.markets() if mk.status == "scoring"}
        live = {"round": live_rounds, "market": scoring}
        for duty in list(self._waiting):
            kind, ident = duty
            if ident not in live.get(kind, pending):
                del self._waiting[duty]
        for ids in list(self._prepared):
            if not pending.issuperset(ids):
                del self._prepared[ids]
        for pid in list(self._approved):
            if pid not in pending:
                del self._approved[pid]

    def _waited(self, duty: tuple[str, int]) -> bool:
        """Whether ``backup_grace`` seconds have passed since this validator first asked."""
        first = self._waiting.setdefault(duty, time.monotonic())
        return time.monotonic() - first >= self.backup_grace

    def due(self, duty: tuple[str, int], validators) -> bool:
        """Whether to act on ``duty`` now: at once as one of its primaries, as a backup only
        once it has waited ``backup_grace`` seconds since first seeing the duty undone."""
        if self.address in primaries(validators, duty[1]):
            return True
        if not self._waited(duty):
            return False
        self.log.info(
            "%s %d: still undone after %.0f s, acting as backup", *duty, self.backup_grace
        )
        return True

    def held_out(self, spec: bytes):
        """This validator's held-out data read against the model's data contract (once per
        architecture); DataMismatch if it does not fit."""
        from .. import fl

        key = hashlib.sha256(spec).hexdigest()
        found = self._held_out.get(key)
        if found is None:
            try:
                found = fl.load_data(self.source, self.target, fl.spec_contract(spec))
            except DfmlError as err:
                found = err
            self._held_out[key] = found
        if isinstance(found, DfmlError):
            raise found
        return found

    def evaluate(self, spec: bytes, weights, metric: str | None = None) -> dict[str, float]:
        """The model's loss and metrics on this validator's held-out data, ``metric`` (the
        model's own, by its Keras name) among them."""
        from .. import fl

        x, y = self.held_out(spec)
        return fl.evaluate(spec, weights, x, y, metric)

    def strategy(self, model, rnd, limit: int):
        """A maker of the model's strategy as it stood when ``rnd`` opened: configured with
        the model's parameters and, for a stateful one, holding the server state the round
        started from (read by its CID). Every call makes a fresh one, so an aggregation that
        must be redone, or leave-one-out's re-aggregations, start from the same state."""
        from .. import fl

        made = fl.strategy_for(model.strategy, model.strategy_params)
        data = None
        if made.STATEFUL and rnd.base_state_cid is not None:
            # a float64 moment or two per float32 weight: at most 4x the weights
            data = self.store.get(rnd.base_state_cid, max_bytes=4 * limit)

        def make():
            fresh = fl.strategy_for(model.strategy, model.strategy_params)
            if fresh.STATEFUL:
                fresh.restore(data)
            return fresh

        make()  # a state that does not fit the strategy fails here, before any work
        return make

    def judge(self, state: State, rnd):
        """The verdict on a closed round (``Judged``); ``WAIT`` while a secure round's
        reveals are missing (judged again later); None when it cannot be judged at all (its
        held-out data do not fit, a secure sum cannot be read, the round's server state is
        not the strategy's): the validator then abstains."""

        try:
            return self._judge(state, rnd)
        except DataMismatch as err:  # its held-out data cannot judge this model: it abstains
            self.log.warning("round %d: abstaining: held-out data: %s", rnd.round_id, err)
            return None
        except StorageUnavailable:
            raise  # storage is down: judge nobody now, retry later
        except FlError as err:  # e.g. a server state that is not the strategy's
            self.log.warning("round %d: abstaining: %s", rnd.round_id, err)
            return None

    def _judge(self, state: State, rnd):
        from .. import fl

        model = state.model(rnd.model_id)
        spec = self.spec(model.architecture_cid)
        metric = model.metric  # the model's own, by its Keras name

        def ev(weights):
            return self.evaluate(spec, weights, metric)

        limit = self.weights_limit(model)
        base = fl.weights_from_bytes(self.store.get(rnd.base_cid, max_bytes=limit))
        make = self.strategy(model, rnd, limit)
        if model.strategy.endswith(":secure"):
            return self.judge_secure(
                rnd, spec, base, self.weights_limit(model, masked=True), metric, make
            )

        def load(cid: str):
            """An update's weights: views into one buffer where the store reads into one (a
            400 MB update then takes 400 MB, not twice that while it is decoded); a
            one-block update from the root block the availability check fetched."""
            whole = _one_block_file(cid, roots.pop(cid, None), limit)
            if whole is not None:
                return fl.weights_from_bytes(whole)
            get_buffer = getattr(self.store, "get_buffer", None)
            if get_buffer is None:
                return fl.weights_from_bytes(self.store.get(cid, max_bytes=limit))
            return fl.weights_from_buffer(get_buffer(cid, max_bytes=limit))

        # Pass 1: each update read, checked, its norm and claim recorded, and dropped (a
        # robust strategy, which needs every update at once, keeps them in memory instead).
        linear = make().LINEAR
        # worker -> weights: every update of a robust strategy (it needs them at once), and
        # of a linear one while they fit KEEP_BYTES (a round of many small updates is then
        # read once, not once per pass)
        kept: dict[str, list] = {}
        kept_bytes = 0
        claims: dict[str, int] = {}  # accepted worker -> examples claimed
        rejected, norms = {}, {}
        cids = {u.worker: u.cid for u in rnd.updates}
        roots: dict[str, bytes] = {}  # CID -> its verified root block, where it is small
        missing = self.unavailable([u.cid for u in rnd.updates], roots)
        ordered = sorted(rnd.updates, key=lambda u: u.worker)
        # read ahead: a round of many small updates is a request each, which storage serves
        # while this thread checks the ones before (at most READ_AHEAD_BYTES in flight)
        ahead = max(0, min(READ_AHEAD, READ_AHEAD_BYTES // max(limit, 1) - 1))
        fetched = _read_ahead(
            [u.cid for u in ordered if u.cid not in missing], load, ahead, self._readers
        )
        for u in ordered:
            if u.cid in missing:
                rejected[u.worker] = fit_reason(f"update not in storage: {missing[u.cid]}")
                continue
            try:
                weights, failed = next(fetched)
                if failed is not None:
                    raise failed
            except StorageUnavailable:
                raise  # storage is down, not the update: judge nobody now, retry later
            except DfmlError as err:
                rejected[u.worker] = fit_reason(f"unreadable update: {err}")
                continue
            update = fl.ClientUpdate(u.worker, weights, u.num_examples)
            check = fl.check_update(base, update, max_examples=self.max_examples)
            if not check.accepted:
                rejected[u.worker] = fit_reason(check.reason)
                continue
            if check.delta_norm == 0:
                # the round's model sent back (a free rider): no work, and left in, a majority
                # of them would make the median norm 0 and every trained update an outlier
                rejected[u.worker] = "the update is the round's base model: no training"
                continue
            claims[u.worker] = u.num_examples
            norms[u.worker] = check.delta_norm  # delta_norm(base, weights)
            size = sum(w.nbytes for w in weights)
            if not linear or kept_bytes + size <= KEEP_BYTES:
                kept[u.worker] = weights
                kept_bytes += size
            del weights, update
        accepted = sorted(claims)
        if len(accepted) >= 3:
            bound = NORM_OUTLIER_FACTOR * statistics.median(norms[w] for w in accepted)
            for w in list(accepted):
                if norms[w] > bound:
                    accepted.remove(w)
                    rejected[w] = fit_reason(
                        f"update norm {norms[w]:.3g} exceeds {bound:.3g} "
                        f"({NORM_OUTLIER_FACTOR:g}x the median)"
                    )
        if not accepted:
            return Judged(base, ev(base), {}, rejected)
        # a claim buys at most 3x the median weight
        bounded = fl.bound_examples([fl.ClientUpdate(w, [], claims[w]) for w in accepted])
        examples = {u.client_id: u.num_examples for u in bounded}

        def read(worker: str):
            """An accepted update again (the same verified bytes: its CID names them)."""
            weights = kept.get(worker)
            if weights is None:
                weights = load(cids[worker])
            return fl.ClientUpdate(worker, weights, examples[worker])

        def aggregate(workers: list[str]):
            """Pass 2: a linear strategy reads the updates again one at a time, in client-id
            order, into one float64 sum (the same bits as aggregating them in memory)."""
            strategy = make()
            if not linear:
                return strategy, strategy.aggregate(base, [read(w) for w in workers]), None
            total = fl.WeightedSum(base)
            for w in workers:
                total.add(read(w))
            return strategy, total.aggregate(strategy, base), total

        strategy, weights, total = aggregate(accepted)
        metrics = ev(weights)
        if not _finite(metrics):
            # an extreme but finite update, in a round too small for the outlier filter, broke
            # the aggregate: judge each update alone and reject those that break the model
            for w in list(accepted):
                if not _finite(ev(read(w).weights)):
                    accepted.remove(w)
                    rejected[w] = fit_reason("update makes the model's loss non-finite")
            if not accepted:
                return Judged(base, ev(base), {}, rejected)
            strategy, weights, total = aggregate(accepted)
            metrics = ev(weights)
            if not _finite(metrics):
                self.log.warning(
                    "round %d: the aggregate's metrics are not finite (%s): abstaining",
                    rnd.round_id,
                    metrics,
                )
                return None
        scored = metric if metric in metrics else "loss"
        # the model's metric of the round's base: whether the round improved the model
        before = ev(base).get(scored)
        if len(accepted) > fl.EXACT_CONTRIBUTIONS_MAX:
            # a large round: every client's gain to first order, from one gradient of the
            # held-out loss and one dot product per update (read once more, then dropped)
            x, y = self.held_out(spec)
            gradient = fl.loss_gradient(spec, weights, x, y)
            contributions = fl.first_order_shares(gradient, (read(w) for w in accepted))
        elif total is not None:  # leave-one-out by subtraction, one update read at a time
            # Neither the aggregate nor (for FedAvg and its kin, whose step is a cast) the
            # base is held while scoring: of the base, FedAvg reads only the dtypes.
            del weights
            if isinstance(strategy, fl.FedAvg):  # its step is the cast to these dtypes
                base = [np.empty(0, np.asarray(g).dtype) for g in base]
            contributions = fl.leave_one_out_linear(make(), base, total, read, ev, metric=scored)
            strategy = make()
            weights = total.aggregate(strategy, base)  # made again from the sum
        else:
            contributions = fl.leave_one_out(
                make(), base, [read(w) for w in accepted], ev, metric=scored
            )
        return Judged(weights, metrics, contributions, rejected, strategy.state_bytes(), before)

    def _readers(self):
        """The threads that read a round's updates ahead of its checks (made once)."""
        from concurrent.futures import ThreadPoolExecutor

        if getattr(self, "_reader_pool", None) is None:
            self._reader_pool = ThreadPoolExecutor(READ_AHEAD, thread_name_prefix="dfml-read")
        return self._reader_pool

    def unavailable(self, cids: list[str], roots: dict[str, bytes] | None = None) -> dict[str, str]:
        """The CIDs storage cannot find, with why: asked all at once, each for at most
        ``AVAILABILITY_TIMEOUT`` s, so a round full of CIDs nobody stored is judged in bounded
        time, not one storage timeout after another. Storage being down raises.

        Asking is reading the root block (what a stat reads); with ``roots`` given, the root
        blocks up to ``KEEP_ROOT_BYTES`` are kept there (verified against their CIDs), so
        that an update of one block is not read a second time."""
        from concurrent.futures import ThreadPoolExecutor

        block = getattr(self.store, "block", None) if roots is not None else None

        def stat(cid: str) -> str | None:
            try:
                if block is None:
                    self.store.stat(cid, timeout=AVAILABILITY_TIMEOUT)
                else:
                    root = block(cid, timeout=AVAILABILITY_TIMEOUT)
                    if len(root) <= KEEP_ROOT_BYTES:
                        roots[cid] = root
            except StorageUnavailable:
                raise
            except StorageTimeout as err:
                return str(err)
            except (DfmlError, ValueError):
                return None  # there but unreadable: the full read below says why
            return None

        unique = sorted(set(cids))
        if not unique:
            return {}
        with ThreadPoolExecutor(max_workers=min(16, len(unique))) as pool:
            found = dict(zip(unique, pool.map(stat, unique), strict=True))
        return {cid: why for cid, why in found.items() if why is not None}

    def judge_secure(
        self, rnd, spec: bytes, base, limit: int | None = None, metric=None, make=None
    ):
        from .. import fl

        # every update in the sum must have its worker's reveal: its own mask seed, and its
        # seeds with the selected workers that dropped out (their masks do not cancel)
        waiting = sorted(set(rnd.submitted) - set(rnd.reveals))
        if waiting:
            self.log.info(
                "round %d: secure round waiting for %d worker(s) to reveal their seeds",
                rnd.round_id,
                len(waiting),
            )
            return WAIT

        def seed(text: str) -> bytes:
            return bytes.fromhex(text[2:])

        own = {w: seed(rnd.reveals[w]["own"]) for w in rnd.submitted}
        dropped = {
            (w, peer): seed(s)
            for w in rnd.submitted
            for peer, s in rnd.reveals[w]["dropped"].items()
        }
        masked = []
        for u in sorted(rnd.updates, key=lambda u: u.worker):
            try:
                layers = fl.weights_from_bytes(self.store.get(u.cid, max_bytes=limit))
            except DfmlError as err:
                self.log.warning(
                    "round %d: unreadable masked update (%s): abstaining", rnd.round_id, err
                )
                return None
            shapes_ok = len(layers) == len(base) and all(
                np.shape(a) == np.shape(b) and a.dtype == np.uint64
                for a, b in zip(layers, base, strict=True)
            )
            if not shapes_ok:
                self.log.warning("round %d: malformed masked update: abstaining", rnd.round_id)
                return None
            masked.append(MaskedUpdate(u.worker, layers, float(u.num_examples)))
        # the revealed mean, stepped from by the model's (linear) strategy
        strategy = make() if make is not None else fl.FedAvg()
        weights = strategy.step(base, fl.secure_mean(masked, own_seeds=own, dropped=dropped))
        if not all(np.all(np.isfinite(w)) for w in weights):
            self.log.warning("round %d: the unmasked sum is not finite: abstaining", rnd.round_id)
            return None
        # only the sum is visible, so contributions follow the (public) example counts, each
        # capped as in a plain round; the masked sum itself carries each worker's own claim
        claims = fl.bound_examples(
            [fl.ClientUpdate(u.worker, [], u.num_examples) for u in rnd.updates]
        )
        contributions = {u.client_id: float(u.num_examples) for u in claims}
        metrics = self.evaluate(spec, weights, metric)
        before = self.evaluate(spec, base, metric).get(metric if metric in metrics else "loss")
        return Judged(weights, metrics, contributions, {}, strategy.state_bytes(), before)

    def verdict_on(self, state: State, rnd):
        """This process's ``Verdict`` on ``rnd`` (its aggregate stored), WAIT, or None (it
        abstains): judged once for every validator this process hosts, and reused by the
        others. Each of them would compute exactly the same verdict: judging reads no
        identity's key or address, only the round (its updates and base, fixed once it
        aggregates), its model, and this process's held-out data, storage, limits and code,
        deterministically; judging again per identity would only cost the time again. WAIT
        is not kept: a secure round is judged again once its reveals are in."""
        if rnd.round_id in self._verdicts:
            return self._verdicts[rnd.round_id]
        made = self._judge_and_store(state, rnd)
        if made is not WAIT:
            self._verdicts[rnd.round_id] = made
        return made

    def _judge_and_store(self, state: State, rnd):
        from .. import fl

        started = time.perf_counter()
        judged = self.judge(state, rnd)
        if judged is WAIT or judged is None:
            return judged
        weights, metrics, contributions, rejected, server_state, before = judged
        cid = self.store.put(fl.weights_to_bytes(weights))
        # a stateful strategy's state goes beside the aggregate, attested with it
        state_cid = None if server_state is None else self.store.put(server_state)
        judged_s = time.perf_counter() - started
        metric = state.model(rnd.model_id).metric
        verdict = encoders.verdict(
            rnd.round_id,
            cid,
            accuracy=metrics.get("accuracy", 0.0),  # a regression has none: 0
            loss=metrics["loss"],
            contributions=contributions,
            rejected=rejected,
            # the model's own metric, when it is neither of those (an AttestMetric)
            metric=None if metric in ("accuracy", "loss") else metrics.get(metric),
            state_cid=state_cid,
            base_metric=before,
            inline_max=self.inline_max,
        )
        if verdict.table is not None:  # a large round's verdict: its table goes to storage too
            stored = self.store.put(verdict.table)
            if verdict.call.table is None or stored != verdict.call.table.cid:
                raise StorageError(f"storage named the verdict table {stored}, not its CID")
        return Verdict(cid, verdict, metrics, len(contributions), len(rejected), judged_s)

    def attest(self, state: State, rnd) -> str:
        made = self.verdict_on(state, rnd)
        if made is WAIT:
            return ""  # not yet judgeable (a secure round's reveals): try again next step
        if made is None:
            self.attested.add(rnd.round_id)
            return ""
        cid, verdict, metrics, accepted, rejected, judged_s = made
        now_state = self.proto.state()
        now = now_state.round(rnd.round_id)
        if now is not None and now.status != "aggregating":
            # the others finalized it while this one judged: an attestation now only costs
            self.attested.add(rnd.round_id)
            self.log.info("round %d: %s before this attestation", rnd.round_id, now.status)
            return cid
        riding = time.perf_counter()
        riders = self._riders(now_state)
        riding = time.perf_counter() - riding
        try:
            sent = self.proto.submit_with(self.key, verdict.remarks(), [call for _, call in riders])
        except ProtocolRejected:
            now = self.proto.state().round(rnd.round_id)
            if now is None or now.status == "aggregating":
                raise
            # the others finalized it in the same block: nothing was lost but the fee
            self.attested.add(rnd.round_id)
            self.log.info("round %d: %s before this attestation landed", rnd.round_id, now.status)
            return cid
        self.attested.add(rnd.round_id)
        failed = sent.receipt.events_of("Utility", "BatchInterrupted")
        lead = len(verdict.remarks())  # the table's parts and the attestation come first
        stopped_at = int(failed[0]["attributes"]["index"]) - lead + 1 if failed else len(riders) + 1
        for j, (batch, _) in enumerate(riders, start=1):
            if j < stopped_at:
                self._log_approved(batch, " with the attestation")
            elif j == stopped_at:
                self.log.info(
                    "payouts %s not approved with the attestation: %s",
                    [p.id for p in batch],
                    failed[0]["attributes"].get("error"),
                )
        self.log.info(
            "round %d: attested %s (%s, %d accepted, %d rejected; judged in %.2f s, "
            "%d payout approval%s with it prepared in %.2f s)",
            rnd.round_id,
            cid,
            ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()),
            accepted,
            rejected,
            judged_s,
            len(riders),
            "" if len(riders) == 1 else "s",
            riding,
        )
        return cid

    def due_payouts(self, state: State) -> list[tuple[list, str]]:
        """The payout batches this validator should approve now: of its pools, a round's
        rewards together (see ``payout_batches``). The j-th primary of a batch waits for j
        approvals before adding its own, so the k-th executes it without a race. Each with a
        fingerprint of the multisig's open approvals, on which the approval call depends."""
        due = []
        ready = state.pending_payouts(ready_only=True)
        for batch in payout_batches(ready, state.pending_payouts()):
            first = batch[0]
            # the pool's own signatories: a former pool (a migration, a refund into it) is
            # signed by the validators it was made of, whether they still validate or not
            signers = state.pool_signers(first.pool)
            if signers is None or self.address not in signers[0]:
                continue
            validators, threshold = list(signers[0]), signers[1]
            duty = ("payout", first.id)
            if not self.due(duty, validators):
                continue
            call = self.proto.payout_call(batch)
            ids = tuple(p.id for p in batch)
            # never approve a payout in two different calls: with one approval per payout per
            # validator, two calls paying it can never both reach a quorum of signatures
            other = {self._approved[i] for i in ids if i in self._approved} - {call.call_hash}
            if other:
                self.log.warning(
                    "payouts %s not approved: already approved in another call %s",
                    list(ids),
                    sorted(other)[0],
                )
                continue
            open_ = self.chain.multisig_pending(validators, threshold, call)
            approvals = [self.chain.address(a) for a in (open_ or {}).get("approvals", [])]
            if self.address in approvals:
                continue  # approved; waiting for the others
            first_hand = primaries(validators, first.id)
            turn = first_hand.index(self.address) if self.address in first_hand else 0
            if len(approvals) < turn and not self._waited(duty):
                continue  # the primaries before this one approve first
            due.append((batch, repr(open_)))
        return due

    def _mark_approved(self, batch) -> None:
        call_hash = self.proto.payout_call(batch).call_hash
        for p in batch:
            self._approved[p.id] = call_hash

    def attesting_soon(self, state: State) -> bool:
        """Whether a round of a model this validator validates is still open or aggregating
        and not yet attested by it: its payout approvals can ride with that attestation."""
        for rnd in state.rounds(status=("open", "aggregating")):
            if rnd.round_id in self.attested:
                continue
            model = state.model(rnd.model_id)
            if model is not None and self.address in model.validators:
                return True
        return False

    def approve_payouts(self, state: State) -> None:
        """Approve due payouts on their own, one multisig call per batch. While this validator
        has a round to attest, they wait (up to ``backup_grace``) to ride in its attestation's
        extrinsic instead: an approval of its own costs a block that the round's updates or
        attestations would then queue behind."""
        soon = self.attesting_soon(state)
        for batch, fingerprint in self.due_payouts(state):
            ids = [p.id for p in batch]
            if soon and not self._waited(("payout alone", ids[0])):
                # compose the approval now, while idle, not on the attestation's critical path
                self._approval_call(ids, fingerprint)
                continue
            try:
                self.proto.approve_payout(self.key, ids)
                self._log_approved(batch)
            except DfmlError as err:
                # another validator may have executed it meanwhile: the next replay tells
                self.log.info("payouts %s not approved now: %s", ids, err)

    def _log_approved(self, batch, how: str = "") -> None:
        self._mark_approved(batch)
        self.log.info(
            "approved payout%s %s (%s, %d in all)%s",
            "s" if len(batch) > 1 else "",
            ",".join(str(p.id) for p in batch),
            batch[0].reason,
            sum(p.amount for p in batch),
            how,
        )

    def _riders(self, state: State) -> list[tuple[list, object]]:
        """The approval calls of the payouts due now, to send with an attestation."""
        riders = []
        for batch, fingerprint in self.due_payouts(state):
            call = self._approval_call([p.id for p in batch], fingerprint)
            if call is not None:
                riders.append((batch, call))
        return riders

    def _approval_call(self, ids: list[int], fingerprint: str):
        """This validator's approval call for payouts ``ids``, composed once per state of the
        multisig's approvals (composing asks the chain for the call's weight: ~0.3 s here)."""
        key = tuple(ids)
        cached = self._prepared.get(key)
        if cached is not None and cached[0] == fingerprint:
            return cached[1]
        try:
            call = self.proto.payout_approval_call(self.key, ids)
        except DfmlError as err:
            self.log.info("payouts %s not approved now: %s", ids, err)
            return None
        self._prepared[key] = (fingerprint, call)
        return call


AVAILABILITY_TIMEOUT = 10.0  # seconds storage may search for one update's content
KEEP_ROOT_BYTES = 1 << 20  # root blocks kept from the availability check, at most this size
READ_AHEAD = 8  # updates read ahead of the one being checked, at most


def _one_block_file(cid: str, root: bytes | None, limit: int) -> bytes | None:
    """The content of ``cid`` when ``root`` (its block, verified against it) is the whole
    file; None when there is no root or the file has more blocks (read it from storage)."""
    if root is None:
        return None
    from ..errors import IntegrityError
    from ..storage import ArtifactTooLarge
    from ..storage.cid import CID
    from ..storage.unixfs import node_of, read_root

    parsed = CID.parse(cid)
    size = read_root(parsed, root).size
    if size > limit:
        raise ArtifactTooLarge(str(parsed), size, limit)
    data, children = node_of(parsed, root)
    if children:
        return None
    if len(data) != size:
        raise IntegrityError(f"{parsed} holds {len(data)} bytes; its root declares {size}")
    return bytes(data)


READ_AHEAD_BYTES = 64 << 20  # ... and at most this many bytes of them (a big model: none)


def _read_ahead(cids: list[str], load, ahead: int, pool):
    """``(load(cid), None)`` for each of ``cids`` in order, or ``(None, error)`` where the
    load raised: with ``ahead`` > 0 the next ``ahead`` loads run on ``pool()``'s threads
    while the caller checks the one before."""

    def one(cid: str):
        try:
            return load(cid), None
        except Exception as err:  # noqa: BLE001 - handed to the caller, in its turn
            return None, err

    if ahead <= 0:
        for cid in cids:
            yield one(cid)
        return
    from collections import deque

    executor = pool()
    queue: deque = deque()
    it = iter(cids)
    for cid in it:
        queue.append(executor.submit(one, cid))
        if len(queue) > ahead:
            break
    try:
        while queue:
            future = queue.popleft()
            nxt = next(it, None)
            if nxt is not None:
                queue.append(executor.submit(one, nxt))
            yield future.result()
    finally:  # the caller stopped early (storage down): drop what is not started
        for f in queue:
            f.cancel()


def _finite(metrics: dict[str, float]) -> bool:
    return all(np.isfinite(v) for v in metrics.values())


def fit_reason(text: str) -> str:
    """A rejection reason cut to what an attestation carries (at most 64 bytes of UTF-8,
    never splitting a character), so an attestation always encodes."""
    raw = text.encode("utf-8")[: C.MAX_REASON_BYTES]
    return raw.decode("utf-8", errors="ignore")


def payout_batches(ready, pending) -> list[list]:
    """Ready payouts grouped for one multisig call each: those a pool came to owe in the same
    block, when every pending payout of that block is ready; others alone. In id order, so
    every validator derives the same calls whenever it looks."""
    by_block: dict[tuple, list] = {}
    for p in pending:
        by_block.setdefault((p.model_id, p.pool, p.created_block), []).append(p)
    ready_ids = {p.id for p in ready}
    batches, seen = [], set()
    for p in ready:
        if p.id in seen:
            continue
        group = by_block[(p.model_id, p.pool, p.created_block)]
        if all(q.id in ready_ids for q in group):
            batch = sorted(group, key=lambda q: q.id)
        else:
            batch = [p]
        seen.update(q.id for q in batch)
        batches.append(batch)
    return batches


def build_parser(prog: str = "dfml validator") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=__doc__)
    p.add_argument("--url", required=True)
    p.add_argument("--storage", required=True)
    p.add_argument(
        "--key",
        default=None,
        action="append",
        help="a dev URI (//Dev1) or a key file; a secret only in a key file or DFML_KEY; "
        "repeat it to run several validators in this process (one chain connection, index, "
        "storage client and TensorFlow runtime; each signs with its own key)",
    )
    p.add_argument("--key-file", default=None, help="file holding the key (chmod 600)")
    p.add_argument(
        "--data",
        default=None,
        help="its own held-out data: a CSV or Parquet file (with --target), a .npz with x and y, "
        "or a folder of images with one sub-folder per class; default: a --dataset split",
    )
    p.add_argument("--target", default=None, help="the label column of a CSV/Parquet file")
    p.add_argument("--dataset", default="digits", help="a bundled dataset (demos and tests)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--index-db", default=None)
    p.add_argument("--poll", type=float, default=2.0, help="longest wait between steps (s)")
    add_from_block_option(p)
    p.add_argument(
        "--backup-grace",
        type=float,
        default=BACKUP_GRACE,
        help="seconds to leave a round or payout to its primary validators before acting on it",
    )
    p.add_argument(
        "--inline-max",
        type=int,
        default=int(os.environ.get("DFML_INLINE_MAX", C.MAX_INLINE)),
        help="most updates a verdict lists inline; a larger one is sent as a table "
        f"(table_part remarks, also stored in storage); at most {C.MAX_INLINE} "
        "(default: DFML_INLINE_MAX, else the most)",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    a = build_parser().parse_args(argv)
    v = Validator(
        a.url,
        a.storage,
        agent_keys(a.key, a.key_file, argv),
        dataset=a.dataset,
        data=a.data,
        target=a.target,
        seed=a.seed,
        index_db=a.index_db,
        poll=a.poll,
        from_block=a.from_block,
        backup_grace=a.backup_grace,
        inline_max=a.inline_max,
    )
    return run_agent(v)


if __name__ == "__main__":
    sys.exit(main())
