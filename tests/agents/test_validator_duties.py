"""Which validator acts first on a round or a payout, and when a backup steps in."""

from __future__ import annotations

import logging
from collections import Counter

import pytest

from decentralml_jupyter.agents import validator as vmod
from decentralml_jupyter.agents.validator import Validator, primaries
from decentralml_jupyter.protocol.accounts import pool_threshold

ACCOUNTS = [f"5Account{i:02d}" for i in range(7)]


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 7])
def test_primaries_are_a_quorum_that_rotates_evenly(n):
    validators = ACCOUNTS[:n]
    k = pool_threshold(n)
    counts = Counter()
    for salt in range(n * 10):
        first = primaries(validators, salt)
        assert len(first) == len(set(first)) == k
        assert set(first) <= set(validators)
        counts.update(first)
    # over whole rotations every validator carries the same share of the work
    assert set(counts.values()) == {10 * k}
    assert set(counts) == set(validators)


def test_every_validator_derives_the_same_primaries():
    shuffled = [ACCOUNTS[i] for i in (4, 0, 2, 1, 3)]
    for salt in range(20):
        assert primaries(shuffled, salt) == primaries(sorted(shuffled), salt)
    assert primaries([], 3) == []


def _validator(address: str, grace: float) -> Validator:
    v = Validator.__new__(Validator)  # the duty logic needs no chain, storage or data
    v.address, v.backup_grace, v._waiting = address, grace, {}
    v.log = logging.getLogger("test")
    return v


def test_a_primary_acts_at_once_and_a_backup_after_its_grace(monkeypatch):
    validators = ACCOUNTS[:3]
    duty = ("round", 5)
    first = primaries(validators, 5)
    (backup,) = set(validators) - set(first)
    now = [100.0]
    monkeypatch.setattr(vmod.time, "monotonic", lambda: now[0])
    primary, spare = _validator(first[0], 10.0), _validator(backup, 10.0)
    assert primary.due(duty, validators)
    assert not spare.due(duty, validators)  # starts its wait
    now[0] += 9.9
    assert not spare.due(duty, validators)
    now[0] += 0.2
    assert spare.due(duty, validators)
    # another duty has its own clock
    other = next(d for d in range(6, 20) if backup not in primaries(validators, d))
    assert not spare.due(("payout", other), validators)


def _payout(pid: int, block: int, pool: str = "5Pool", model: int = 1):
    from decentralml_jupyter.protocol.values import Payout

    return Payout(pid, model, pool, f"5Dest{pid}", 10 + pid, None, "round_reward", block)


def test_a_blocks_payouts_of_a_pool_go_in_one_call_when_all_are_ready():
    from decentralml_jupyter.agents.validator import payout_batches

    round_a = [_payout(i, 40) for i in (3, 1, 2)]
    round_b = [_payout(i, 50) for i in (4, 5)]
    other_pool = [_payout(6, 40, pool="5Other", model=2)]
    pending = [*round_a, *round_b, *other_pool]
    ready = [p for p in pending if p.id != 5]  # the pool cannot pay payout 5 yet
    batches = [[p.id for p in b] for b in payout_batches(ready, pending)]
    assert sorted(batches) == [[1, 2, 3], [4], [6]]
    # every validator derives the same batches, whatever order it lists them in
    again = payout_batches(list(reversed(ready)), list(reversed(pending)))
    assert sorted([p.id for p in b] for b in again) == sorted(batches)
    assert payout_batches([], pending) == []


class _State:
    """The few State queries the duty bookkeeping reads."""

    def __init__(self, rounds, models, pending, markets=()):
        self._rounds, self._models, self._pending = rounds, models, pending
        self._markets = list(markets)

    def markets(self, model_id=None):
        return self._markets

    def rounds(self, model_id=None, status=None):
        return [r for r in self._rounds if status is None or r.status in status]

    def model(self, model_id):
        return self._models.get(model_id)

    def pending_payouts(self, ready_only=False):
        return self._pending


def test_approvals_wait_to_ride_only_while_a_round_of_ours_awaits_our_attestation():
    from types import SimpleNamespace as NS

    me, other = ACCOUNTS[0], ACCOUNTS[5]
    models = {1: NS(validators=ACCOUNTS[:3]), 2: NS(validators=[other, ACCOUNTS[6]])}
    v = _validator(me, 10.0)
    v.attested = set()
    rnd = NS(round_id=7, model_id=1, status="open")
    assert v.attesting_soon(_State([rnd], models, []))
    rnd.status = "aggregating"
    assert v.attesting_soon(_State([rnd], models, []))
    v.attested.add(7)  # attested already: nothing to ride with
    assert not v.attesting_soon(_State([rnd], models, []))
    # a finished round, or a round of a model this validator does not validate
    done = NS(round_id=8, model_id=1, status="finalized")
    theirs = NS(round_id=9, model_id=2, status="open")
    assert not v.attesting_soon(_State([done, theirs], models, []))


def test_backup_timers_and_composed_approvals_are_forgotten_once_done():
    from types import SimpleNamespace as NS

    v = _validator(ACCOUNTS[0], 10.0)
    v._prepared = {(1, 2): ("fp", "call"), (3,): ("fp", "call")}
    v._waiting = {("round", 4): 1.0, ("round", 5): 1.0, ("payout", 1): 1.0, ("payout", 3): 1.0}
    v._waiting[("payout alone", 3)] = 1.0
    v._waiting.update({("market", 6): 1.0, ("market", 7): 1.0})  # scoring, and paid
    v._approved = {1: "0xaa", 2: "0xaa", 3: "0xbb"}
    rounds = [NS(round_id=4, status="finalized"), NS(round_id=5, status="aggregating")]
    markets = [NS(market_id=6, status="scoring"), NS(market_id=7, status="paid")]
    # payouts 1 and 2 were paid
    v._forget_done_duties(_State(rounds, {}, [_payout(3, 40)], markets))
    assert set(v._waiting) == {
        ("round", 5), ("payout", 3), ("payout alone", 3), ("market", 6)
    }  # fmt: skip
    assert set(v._prepared) == {(3,)}
    assert v._approved == {3: "0xbb"}  # what it approved, only while still owed


class _PoolState(_State):
    """Pending payouts of pools with known signatories (current and former pools alike)."""

    def __init__(self, pending, signers):
        super().__init__([], {}, pending)
        self._signers = signers

    def pool_signers(self, pool):
        return self._signers.get(pool)


def test_a_payout_is_approved_in_one_call_only_and_by_its_pools_own_signatories():
    from types import SimpleNamespace as NS

    me = ACCOUNTS[0]
    signers = {"5Pool": (tuple(ACCOUNTS[:3]), 2), "5Former": (tuple(ACCOUNTS[3:6]), 2)}
    v = _validator(me, 0.0)  # no grace: every due duty is due now
    v._approved = {}
    v.chain = NS(multisig_pending=lambda *a: None, address=lambda a: a)
    v.proto = NS(payout_call=lambda batch: NS(call_hash="0x" + "".join(str(p.id) for p in batch)))
    v._waiting = {}
    one, two = _payout(1, 40), _payout(2, 40)
    state = _PoolState([one, two], signers)
    due = [[p.id for p in b] for b, _ in v.due_payouts(state)]
    assert due == [[1, 2]]  # one block's payouts of a pool, as one call
    v._mark_approved([one, two])
    # later the same payout turns up in another call (say payout 2 was paid meanwhile):
    # this validator approved payout 1 in call 0x12 already, so it refuses call 0x1
    assert v.due_payouts(_PoolState([one], signers)) == []
    # a former pool's payout is for the validators it was made of, not for this one
    former = _payout(3, 41, pool="5Former")
    assert v.due_payouts(_PoolState([former], signers)) == []
    them = _validator(ACCOUNTS[3], 0.0)
    them._approved, them.chain, them.proto, them._waiting = {}, v.chain, v.proto, {}
    assert [[p.id for p in b] for b, _ in them.due_payouts(_PoolState([former], signers))] == [[3]]


def test_storage_down_judges_nobody_while_a_missing_update_is_rejected():
    from types import SimpleNamespace as NS

    import numpy as np

    from decentralml_jupyter import fl
    from decentralml_jupyter.storage import StorageTimeout, StorageUnavailable

    base = [np.zeros((2, 2), np.float32)]
    down = {"now": False}

    def get(cid):
        if cid == "QmBase":
            return fl.weights_to_bytes(base)
        if down["now"]:
            raise StorageUnavailable("no storage service answers")
        raise StorageTimeout(f"{cid}: not found in storage in time")

    v = _validator(ACCOUNTS[0], 0.0)
    v.store = NS(get=lambda cid, max_bytes=None: get(cid), stat=lambda cid, timeout=None: get(cid))
    v.max_examples = 100
    v._weights_size = {"QmBase": 100}
    v.spec = lambda cid: b"spec"
    v.evaluate = lambda spec, weights, metric=None: {"accuracy": 0.5, "loss": 1.0}
    model = NS(
        architecture_cid="QmArch", strategy="fedavg", weights_cid="QmBase", metric="accuracy",
        strategy_params={},
    )  # fmt: skip
    gone = [NS(worker="5W", cid="QmGone", num_examples=5)]
    rnd = NS(base_cid="QmBase", base_state_cid=None, model_id=1, updates=gone)
    state = NS(model=lambda mid: model)
    _, _, accepted, rejected, *_ = v.judge(state, rnd)
    assert accepted == {} and rejected["5W"].startswith("update not in storage: QmGone")
    down["now"] = True  # the same update while storage is down: not the worker's fault
    with pytest.raises(StorageUnavailable):
        v.judge(state, rnd)


def test_an_extreme_but_finite_update_in_a_small_round_is_rejected_not_fatal():
    from types import SimpleNamespace as NS

    import numpy as np

    from decentralml_jupyter import fl
    from decentralml_jupyter.storage import ArtifactTooLarge

    base = [np.zeros((4,), np.float32)]
    honest = [np.full((4,), 0.1, np.float32)]
    extreme = [np.full((4,), 1e30, np.float32)]  # finite, but its square is not
    blobs = {"QmBase": base, "QmHonest": honest, "QmExtreme": extreme}

    def evaluate(spec, weights, metric=None):
        loss = np.sum(np.square(np.asarray(weights[0], np.float32)), dtype=np.float32)
        return {"accuracy": 0.5, "loss": float(loss)}

    def get(cid, max_bytes=None):
        data = fl.weights_to_bytes(blobs[cid])
        if max_bytes is not None and len(data) > max_bytes:  # as the real store refuses it
            raise ArtifactTooLarge(cid, len(data), max_bytes)
        return data

    v = _validator(ACCOUNTS[0], 0.0)
    v.store = NS(
        get=get, stat=lambda cid, timeout=None: NS(size=len(fl.weights_to_bytes(blobs[cid])))
    )
    v._weights_size = {}
    v.max_examples, v.spec, v.evaluate = 100, (lambda cid: b"spec"), evaluate
    model = NS(
        architecture_cid="QmArch", strategy="fedavg", weights_cid="QmBase", metric="accuracy",
        strategy_params={},
    )  # fmt: skip
    state = NS(model=lambda mid: model)
    updates = [
        NS(worker="5Honest", cid="QmHonest", num_examples=10),
        NS(worker="5Extreme", cid="QmExtreme", num_examples=10),
    ]
    rnd = NS(round_id=3, base_cid="QmBase", base_state_cid=None, model_id=1, updates=updates)
    weights, metrics, contributions, rejected, *_ = v.judge(state, rnd)
    assert set(contributions) == {"5Honest"} and set(rejected) == {"5Extreme"}
    assert "non-finite" in rejected["5Extreme"]
    assert np.isfinite(metrics["loss"]) and np.allclose(weights[0], 0.1)
    # a round of the extreme update alone: rejected, the model stays at its base
    rnd.updates = updates[1:]
    weights, metrics, contributions, rejected, *_ = v.judge(state, rnd)
    assert contributions == {} and set(rejected) == {"5Extreme"}
    assert np.array_equal(weights[0], base[0])
    # an update far larger than the model's weights is refused unread, not loaded
    blobs["QmHuge"] = [np.zeros((4,), np.float32), np.zeros((1 << 18,), np.float32)]
    rnd.updates = [*updates[:1], NS(worker="5Huge", cid="QmHuge", num_examples=10)]
    _, _, contributions, rejected, *_ = v.judge(state, rnd)
    assert set(contributions) == {"5Honest"}
    assert rejected["5Huge"].startswith("unreadable update: QmHuge holds")


def test_updates_nobody_stored_are_looked_for_all_at_once():
    import threading
    from types import SimpleNamespace as NS

    from decentralml_jupyter.storage import StorageTimeout, StorageUnavailable

    running, most, lock, gate = [0], [0], threading.Lock(), threading.Barrier(4, timeout=30)

    def stat(cid, timeout=None):
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        try:
            if cid.startswith("QmGone"):
                gate.wait()  # only returns once 4 lookups are in flight together
                raise StorageTimeout(f"{cid}: not found in storage in time")
            return NS(size=1)
        finally:
            with lock:
                running[0] -= 1

    v = _validator(ACCOUNTS[0], 0.0)
    v.store = NS(stat=stat)
    cids = [f"QmGone{i}" for i in range(8)] + ["QmHere"]
    missing = v.unavailable(cids)
    assert sorted(missing) == sorted(c for c in cids if c != "QmHere")
    assert most[0] >= 4 and all("not found" in why for why in missing.values())

    def down(cid, timeout=None):
        raise StorageUnavailable("no storage service answers")

    v.store = NS(stat=down)
    with pytest.raises(StorageUnavailable):
        v.unavailable(cids)


def _judging(v, blobs, evaluate=None):
    """``v`` reading ``blobs`` (cid -> weights) as its storage, on a FedAvg model."""
    from types import SimpleNamespace as NS

    from decentralml_jupyter import fl

    def get(cid, max_bytes=None):
        return fl.weights_to_bytes(blobs[cid])

    v.store = NS(get=get, stat=lambda cid, timeout=None: NS(size=len(get(cid))))
    v._weights_size = {}
    v.max_examples = 1000
    if evaluate is not None:
        v.evaluate = evaluate
    model = NS(
        architecture_cid="QmArch", strategy="fedavg", weights_cid="QmBase", metric="accuracy",
        strategy_params={},
    )  # fmt: skip
    return NS(model=lambda mid: model)


def test_free_riders_are_rejected_and_cannot_make_honest_updates_outliers():
    """Free riders send the round's model back. Three of them and two honest workers: left in,
    they would make the median norm 0, so the honest updates would be 'outliers' (and slashed);
    they are rejected instead, and the honest ones aggregated."""
    from types import SimpleNamespace as NS

    import numpy as np

    base = [np.zeros((4,), np.float32)]
    blobs = {"QmBase": base, "QmA": [base[0] + 0.1], "QmB": [base[0] + 0.2]}
    v = _validator(ACCOUNTS[0], 0.0)
    v.spec = lambda cid: b"spec"
    state = _judging(v, blobs, lambda spec, weights, metric=None: {"accuracy": 0.5, "loss": 1.0})
    updates = [
        NS(worker="5A", cid="QmA", num_examples=10),
        NS(worker="5B", cid="QmB", num_examples=10),
    ]
    updates += [NS(worker=f"5Free{i}", cid="QmBase", num_examples=10) for i in range(3)]
    rnd = NS(round_id=1, base_cid="QmBase", base_state_cid=None, model_id=1, updates=updates)
    weights, _, contributions, rejected, *_ = v.judge(state, rnd)
    assert set(contributions) == {"5A", "5B"}
    assert all("no training" in rejected[f"5Free{i}"] for i in range(3))
    assert np.allclose(weights[0], 0.15)


def test_a_round_of_more_than_64_updates_is_scored_to_first_order():
    """70 updates on a real model: contributions from one gradient (not 71 evaluations), the
    updates that move against the held-out data's labels scoring least."""
    from types import SimpleNamespace as NS

    import numpy as np

    from decentralml_jupyter import fl

    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 4)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64)
    model = fl.mlp(4, 2, hidden=(4,))
    spec = fl.model_to_spec(model)
    base = fl.init_weights(spec, 0)
    good, _, _ = fl.train_local(spec, base, x, y, 3, 16, 0.1)
    blobs = {"QmBase": base}
    updates = []
    for i in range(70):
        towards = 1.0 if i >= 10 else -1.0  # the first ten move the other way
        noise = [rng.normal(scale=0.01, size=b.shape).astype(b.dtype) for b in base]
        blobs[f"Qm{i}"] = [
            b + towards * (g - b) + e for b, g, e in zip(base, good, noise, strict=True)
        ]
        updates.append(NS(worker=f"5W{i:02d}", cid=f"Qm{i}", num_examples=10))
    v = _validator(ACCOUNTS[0], 0.0)
    v.spec = lambda cid: spec
    v.held_out = lambda s: (x, y)
    calls = []

    def evaluate(s, weights, metric=None):
        calls.append(1)
        return fl.evaluate(s, weights, x, y)

    state = _judging(v, blobs, evaluate)
    rnd = NS(round_id=1, base_cid="QmBase", base_state_cid=None, model_id=1, updates=updates)
    _, _, contributions, rejected, *_ = v.judge(state, rnd)
    assert len(contributions) + len(rejected) == 70 and len(contributions) > 64
    assert abs(sum(contributions.values()) - 1) < 1e-9
    assert len(calls) < 10  # not one evaluation per update
    against = [contributions.get(f"5W{i:02d}", 0.0) for i in range(10)]
    along = [contributions[w] for w in contributions if int(w[2:]) >= 10]
    assert max(against) <= min(along)
