"""Value safety on the real dev chain, tried as an attacker would.

The one invariant: for every pool and asset, what the protocol's books say the pool holds
never exceeds what the chain says it holds, after any sequence of calls, accepted or rejected.
Each reproduction of an attack found earlier is a regression test here; a hypothesis test
then builds random call trees (batch, batch_all, unexecuted multisig approvals, proxies,
failing inner calls, duplicated remarks, self-transfers, two assets) and checks the invariant
after every one.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from decentralml_jupyter.chain import Chain
from decentralml_jupyter.errors import UsageError
from decentralml_jupyter.protocol import encoders
from decentralml_jupyter.protocol.calls import AddValidator, SetProtocolParam
from decentralml_jupyter.protocol.client import ProtocolClient, ProtocolRejected
from decentralml_jupyter.protocol.errors import ProtocolError
from decentralml_jupyter.protocol.indexer import Indexer

UNIT = 10**12
CID_A = "QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG"
CID_W = "QmT78zSuBmuS4z925WZfrqQ1qHaJ56DQaTfyMUF7F8ff5o"
ASSET = 7707
VALIDATORS = ("Dev1", "Dev2", "Dev3")


def on_chain(chain: Chain, account: str, asset: int | None) -> int:
    if asset is None:
        return chain.balance(account).free
    with chain._lock:
        row = chain.substrate.query("Assets", "Account", [asset, account]).value
    return int(row["balance"]) if row else 0


def assert_books_within_chain(proto: ProtocolClient) -> None:
    """The invariant, for every pool and asset the books count anything in."""
    state = proto.state()
    for (pool, asset), held in state.holdings().items():
        chain_has = on_chain(proto.chain, pool, asset)
        assert held <= chain_has, f"books say {pool} holds {held} of {asset}, chain {chain_has}"
    if not state.losses():
        for info in state.pools():
            assert info.held == info.obligations, info


@pytest.fixture(scope="module")
def world(devchain_url, tmp_path_factory):
    """Two models sharing one validator set (so one pool): one staked in the native token,
    one in an Assets token; Bob and Charlie hold the token; Eve made Dave her proxy."""
    chain = Chain(devchain_url)
    proto = ProtocolClient(chain, Indexer(chain, tmp_path_factory.mktemp("vs") / "i.sqlite"))
    validators = [chain.address(v) for v in VALIDATORS]
    native = proto.register_model("//Alice", "vs-native", CID_A, CID_W, validators=validators)
    token = proto.register_model(
        "//Alice", "vs-token", CID_A, CID_W, validators=validators, stake_asset=ASSET
    )
    pool = proto.state().model(native.created_id("model")).pool
    alice = chain.address("Alice")
    chain.batch_all(
        "//Alice",
        [
            chain.call("Assets", "create", {"id": ASSET, "admin": alice, "min_balance": 1}),
            *[
                chain.call(
                    "Assets",
                    "mint",
                    {"id": ASSET, "beneficiary": chain.address(w), "amount": 1000 * UNIT},
                )
                for w in ("Bob", "Charlie", "Dave")
            ],
            # a non-sufficient asset needs its holder to exist: a native donation (not booked)
            chain.transfer_call(pool, UNIT),
        ],
    )
    chain.submit("//Eve", chain.add_proxy_call(chain.address("Dave")))
    # each actor's 1-of-2 multisig with Ferdie holds funds, so calls it executes can move value
    chain.batch_all(
        "//Alice",
        [
            chain.transfer_call(chain.multisig_address([chain.address(a), "Ferdie"], 1), 50 * UNIT)
            for a in ("Bob", "Charlie", "Dave")
        ],
    )
    ids = {"native": native.created_id("model"), "token": token.created_id("model")}
    try:
        yield proto, ids, pool
    finally:
        proto.close()


def _weight(chain: Chain, call, who: str):
    with chain._lock:
        return chain.substrate.get_payment_info(call, chain.keypair(who))["weight"]


def first_approval(chain: Chain, who: str, others: list[str], call):
    """``Multisig.as_multi`` that opens a new 2-of-n operation: it does not run ``call``."""
    params = {
        "threshold": 2,
        "other_signatories": sorted(
            (chain.address(o) for o in others), key=chain.substrate.ss58_decode
        ),
        "maybe_timepoint": None,
        "call": call,
        "max_weight": _weight(chain, call, who),
    }
    if chain._has_param("Multisig", "as_multi", "store_call"):
        params["store_call"] = False
    return chain.call("Multisig", "as_multi", params)


def refunds_made(state, receipt) -> list:
    """The refunds the protocol came to owe in the receipt's block."""
    return [
        p
        for p in state.pending_payouts()
        if p.reason == "refund" and p.created_block == receipt.block_number
    ]


def stakes_of(proto: ProtocolClient, who: str, model_id: int) -> int:
    who = proto.chain.address(who)
    return sum(s.amount for s in proto.state().stakes(model_id=model_id, account=who))


def test_a_stake_copied_into_an_unexecuted_multisig_approval_is_not_credited(world):
    proto, ids, pool = world
    chain = proto.chain
    stake = encoders.stake(ids["native"], 40 * UNIT)
    inner = chain.batch_all_call([chain.transfer_call(pool, 40 * UNIT), chain.remark_call(stake)])
    forged = chain.batch_all_call(
        [first_approval(chain, "//Bob", ["Charlie"], inner), chain.remark_call(stake)]
    )
    before = stakes_of(proto, "Bob", ids["native"])
    pool_before = chain.balance(pool).free
    receipt = chain.submit("//Bob", forged)
    assert receipt.events_of("Multisig", "NewMultisig")  # the approval opened, nothing ran
    assert chain.balance(pool).free == pool_before
    state = proto.indexer.wait_for(receipt.block_number)
    assert stakes_of(proto, "Bob", ids["native"]) == before
    assert any("no unused transfer" in e.reason for e in state.errors_at(
        receipt.block_number, receipt.extrinsic_index
    ))  # fmt: skip
    assert_books_within_chain(proto)


def test_a_rejected_funded_call_is_refunded_through_the_pools_payouts(world):
    proto, ids, pool = world
    chain = proto.chain
    spec = encoders.round_spec(1, reward=3 * UNIT)
    # the model is not training: the protocol rejects the round, the chain moved the budget
    call = proto.compose(encoders.start_round(ids["native"], spec), [(pool, 3 * UNIT, None)])
    receipt = chain.submit("//Charlie", call)
    state = proto.indexer.wait_for(receipt.block_number)
    assert state.errors_at(receipt.block_number, receipt.extrinsic_index)
    refund = refunds_made(state, receipt)
    assert [(p.dest, p.amount, p.asset_id, p.pool) for p in refund] == [
        (chain.address("Charlie"), 3 * UNIT, None, pool)
    ]
    assert_books_within_chain(proto)
    before = chain.balance("Charlie").free
    proto.approve_payout("//Dev1", refund[0].id)
    proto.approve_payout("//Dev2", refund[0].id)
    assert chain.balance("Charlie").free == before + 3 * UNIT
    assert proto.state().payouts("paid")[-1].id == refund[0].id
    assert_books_within_chain(proto)


def test_a_stake_in_a_non_atomic_batch_counts_what_the_chain_moved(world):
    proto, ids, pool = world
    chain = proto.chain
    before = stakes_of(proto, "Charlie", ids["native"])
    call = chain.batch_call(
        [
            chain.transfer_call(pool, 2 * UNIT),
            chain.remark_call(encoders.stake(ids["native"], 2 * UNIT)),
        ]
    )
    chain.submit("//Charlie", call)
    proto.state()
    assert stakes_of(proto, "Charlie", ids["native"]) == before + 2 * UNIT
    assert_books_within_chain(proto)


def test_a_proxys_own_transfer_backs_nothing_and_is_refunded_to_it(world):
    proto, ids, pool = world
    chain = proto.chain
    before = stakes_of(proto, "Eve", ids["native"])
    call = chain.batch_all_call(
        [
            chain.transfer_call(pool, 5 * UNIT),  # from Dave, the signer
            chain.proxy_call(
                chain.address("Eve"), chain.remark_call(encoders.stake(ids["native"], 5 * UNIT))
            ),
        ]
    )
    receipt = chain.submit("//Dave", call)
    state = proto.indexer.wait_for(receipt.block_number)
    assert stakes_of(proto, "Eve", ids["native"]) == before
    refund = refunds_made(state, receipt)
    assert [(p.dest, p.amount) for p in refund] == [(chain.address("Dave"), 5 * UNIT)]
    assert_books_within_chain(proto)


def test_two_stakes_into_one_shared_pool_in_one_extrinsic_both_count(world):
    proto, ids, pool = world
    chain = proto.chain
    n0, t0 = stakes_of(proto, "Bob", ids["native"]), stakes_of(proto, "Bob", ids["token"])
    call = chain.batch_call(
        [
            proto.compose(encoders.stake(ids["native"], 4 * UNIT), [(pool, 4 * UNIT, None)]),
            proto.compose(encoders.stake(ids["token"], 4 * UNIT, ASSET), [(pool, 4 * UNIT, ASSET)]),
            proto.compose(encoders.stake(ids["native"], 4 * UNIT), [(pool, 4 * UNIT, None)]),
        ]
    )
    chain.submit("//Bob", call)
    proto.state()
    assert stakes_of(proto, "Bob", ids["native"]) == n0 + 8 * UNIT
    assert stakes_of(proto, "Bob", ids["token"]) == t0 + 4 * UNIT
    assert_books_within_chain(proto)


def test_a_stake_in_the_wrong_asset_is_refunded_in_that_asset(world):
    proto, ids, pool = world
    chain = proto.chain
    call = proto.compose(encoders.stake(ids["native"], 6 * UNIT, ASSET), [(pool, 6 * UNIT, ASSET)])
    receipt = chain.submit("//Charlie", call)
    state = proto.indexer.wait_for(receipt.block_number)
    refund = refunds_made(state, receipt)
    assert [(p.dest, p.amount, p.asset_id) for p in refund] == [
        (chain.address("Charlie"), 6 * UNIT, ASSET)
    ]
    before = on_chain(chain, chain.address("Charlie"), ASSET)
    proto.approve_payout("//Dev2", refund[0].id)
    proto.approve_payout("//Dev3", refund[0].id)
    assert on_chain(chain, chain.address("Charlie"), ASSET) == before + 6 * UNIT
    assert_books_within_chain(proto)


def test_no_funds_for_a_pool_one_person_holds(world):
    proto, _, _ = world
    chain = proto.chain
    one = proto.register_model(
        "//Ferdie", "vs-one", CID_A, CID_W, validators=[chain.address("Dev4")]
    ).created_id("model")
    with pytest.raises(ProtocolError, match="one person's account"):
        proto.stake("//Bob", one, UNIT)  # the client sends nothing
    own = proto.state().model(one).pool
    # by hand: the transfer reaches the validator's own account, the protocol counts nothing
    with pytest.raises(ProtocolRejected, match="one person's account"):
        proto.submit("//Bob", encoders.stake(one, UNIT), [(own, UNIT, None)])
    assert stakes_of(proto, "Bob", one) == 0
    assert proto.state().pool(one).held == 0


def test_a_self_transfer_backs_nothing(world):
    proto, ids, _ = world
    chain = proto.chain
    bob = chain.address("Bob")
    before = stakes_of(proto, "Bob", ids["native"])
    with pytest.raises(ProtocolRejected, match="no unused transfer"):
        proto.submit("//Bob", encoders.stake(ids["native"], UNIT), [(bob, UNIT, None)])
    assert stakes_of(proto, "Bob", ids["native"]) == before


def test_governance_bounds_and_critical_quorum(world):
    proto, ids, pool = world
    chain = proto.chain
    with pytest.raises(ProtocolRejected, match="voting period"):
        proto.propose("//Bob", ids["native"], AddValidator(chain.address("Dev4")), 1)
    with pytest.raises(ProtocolRejected, match="unstake_lock_blocks must be in"):
        proto.propose("//Bob", None, SetProtocolParam("unstake_lock_blocks", 2**32 - 1), 10)
    # a small staker alone cannot change who holds the pool: the critical quorum is 50%
    small = "//Ferdie"
    proto.stake(small, ids["native"], UNIT)
    total = proto.state().pool(ids["native"]).stakes
    assert UNIT * 10 < total  # under 10% of the model's stake
    pid = proto.propose(small, ids["native"], AddValidator(chain.address("Dev4")), 10)
    pid = pid.created_id("proposal")
    proto.vote(small, pid, True)
    chain.new_blocks(11)
    p = proto.state().proposal(pid)
    assert p.status == "rejected" and "quorum" in p.note
    assert proto.state().model(ids["native"]).pool == pool
    assert_books_within_chain(proto)


def test_a_validator_change_migrates_the_pool_and_every_staker_can_leave(devchain_url, tmp_path):
    chain = Chain(devchain_url)
    proto = ProtocolClient(chain, Indexer(chain, tmp_path / "m.sqlite"))
    try:
        old = [chain.address(v) for v in ("Dev2", "Dev4")]
        mid = proto.register_model("//Ferdie", "vs-mig", CID_A, CID_W, validators=old)
        mid = mid.created_id("model")
        old_pool = proto.state().model(mid).pool
        proto.stake("//Bob", mid, 30 * UNIT)
        proto.stake("//Charlie", mid, 12 * UNIT)
        pid = proto.propose("//Bob", mid, AddValidator(chain.address("Dev1")), 10)
        proto.vote("//Bob", pid.created_id("proposal"), True)
        chain.new_blocks(11)
        state = proto.state()
        new_pool = state.model(mid).pool
        assert new_pool != old_pool
        migrate = [p for p in state.pending_payouts() if p.model_id == mid]
        assert [(p.reason, p.pool, p.dest, p.amount) for p in migrate] == [
            ("migrate", old_pool, new_pool, 42 * UNIT)
        ]
        # the former validators sign it; Dev1 (new) is not one of the old pool's signatories
        with pytest.raises(UsageError, match="not a member"):
            proto.approve_payout("//Dev1", migrate[0].id)
        proto.approve_payout("//Dev2", migrate[0].id)
        proto.approve_payout("//Dev4", migrate[0].id)
        assert chain.balance(old_pool).free == 0  # emptied: nothing left behind
        assert chain.balance(new_pool).free == 42 * UNIT
        assert_books_within_chain(proto)
        # everyone leaves; the last one takes the pool down to nothing
        for who, amount in (("//Bob", 30), ("//Charlie", 12)):
            proto.unstake(who, mid, amount * UNIT)
        chain.new_blocks(proto.state().params.unstake_lock_blocks + 1)
        owed = [p for p in proto.state().pending_payouts(ready_only=True) if p.model_id == mid]
        assert sorted(p.amount for p in owed) == [12 * UNIT, 30 * UNIT]
        signers = proto.state().pool_signers(new_pool)[0]
        names = {chain.address(n): n for n in ("Dev1", "Dev2", "Dev4")}
        for payout in owed:
            for signer in signers[:2]:
                proto.approve_payout(f"//{names[signer]}", payout.id)
        state = proto.state()
        assert not [p for p in state.pending_payouts() if p.model_id == mid]
        assert state.pool(mid).held == 0
        assert chain.balance(new_pool).free == 0
        assert_books_within_chain(proto)
    finally:
        proto.close()


def test_a_payout_paid_twice_by_a_dishonest_quorum_is_debited_not_hidden(world):
    proto, ids, pool = world
    chain = proto.chain
    proto.stake("//Charlie", ids["native"], 3 * UNIT)
    proto.unstake("//Charlie", ids["native"], 3 * UNIT)
    chain.new_blocks(proto.state().params.unstake_lock_blocks + 1)
    payout = next(
        p
        for p in proto.state().pending_payouts(ready_only=True)
        if p.model_id == ids["native"] and p.reason == "unstake"
    )
    proto.approve_payout("//Dev1", payout.id)
    proto.approve_payout("//Dev2", payout.id)
    assert payout.id in {p.id for p in proto.state().payouts("paid")}
    # two validators sign the same payout again, in a call of their own making
    again = chain.batch_all_call(
        [chain.transfer_call(payout.dest, payout.amount), chain.remark_call(
            encoders.settle_payout(payout.id)
        )]
    )  # fmt: skip
    validators = [chain.address(v) for v in VALIDATORS]
    chain.multisig_approve("//Dev1", again, validators, 2)
    receipt = chain.multisig_approve("//Dev3", again, validators, 2)
    state = proto.indexer.wait_for(receipt.block_number)
    assert any(x["amount"] == payout.amount and x["pool"] == pool for x in state.losses())
    assert_books_within_chain(proto)


# -- random call trees ------------------------------------------------------------------------

ACTORS = ("Bob", "Charlie", "Dave")


@st.composite
def leaves(draw, proto, ids, pool):
    chain = proto.chain
    who = draw(st.sampled_from(ACTORS))
    kinds = (
        "stake", "stake_token", "start_round", "task", "unstake", "deposit", "market",
        "delegate", "updates",
    )  # fmt: skip
    kind = draw(st.sampled_from(kinds))
    amount = draw(st.sampled_from((1, 2, 3))) * UNIT
    dest = draw(st.sampled_from(("pool", "pool", "self", "other")))
    to = {"pool": pool, "self": chain.address(who), "other": chain.address("Ferdie")}[dest]
    asset = ASSET if kind == "stake_token" else draw(st.sampled_from((None, None, ASSET)))
    model = ids["token"] if kind == "stake_token" else ids["native"]
    if kind.startswith("stake"):
        remark = encoders.stake(model, amount, ASSET if kind == "stake_token" else None)
    elif kind == "start_round":
        remark = encoders.start_round(model, encoders.round_spec(1, reward=amount))
    elif kind == "task":
        remark = encoders.create_task(model, "data_annotator", amount, 1, 5)
    elif kind == "deposit":  # an update's deposit, for a round that takes none
        remark = encoders.submit_update(draw(st.sampled_from((1, 10**6))), CID_W, 1, amount)
    elif kind == "market":  # a bounty, for a model that runs no market
        spec = encoders.round_spec(1, reward=0)
        remark = encoders.start_rounds(model, spec, 1, amount, "0x" + "42" * 32)
    elif kind == "delegate":  # moves nothing: value sent with it is owed back
        host = draw(st.sampled_from((*ACTORS, None)))
        remark = encoders.delegate_updates(None if host is None else chain.address(host))
    elif kind == "updates":  # a host's updates, for a round that does not exist or is closed
        named = [chain.address(a) for a in draw(st.lists(st.sampled_from(ACTORS), min_size=1))]
        entries = [(a, CID_W, i + 1) for i, a in enumerate(named)]
        remark = encoders.submit_updates(draw(st.sampled_from((1, 10**6))), entries)[0]
    else:
        remark = encoders.unstake(model, amount)
    calls = []
    if draw(st.booleans()):
        if asset is None:
            calls.append(chain.transfer_call(to, amount))
        else:
            params = {"id": ASSET, "target": to, "amount": amount}
            calls.append(chain.call("Assets", "transfer_keep_alive", params))
    calls.append(chain.remark_call(remark))
    if draw(st.booleans()):
        calls.append(chain.remark_call(remark))  # duplicated remark bytes
    if draw(st.integers(0, 4)) == 0:  # a failing inner call
        calls.append(chain.transfer_call(chain.address("Ferdie"), 10**30))
    return who, calls


@st.composite
def trees(draw, proto, ids, pool):
    wrap = draw(st.sampled_from(WRAPS))
    who, calls = draw(leaves(proto, ids, pool))
    who, call = _wrapped(draw, proto, ids, pool, who, calls, wrap)
    return who, wrap, call


WRAPS = ("batch_all", "batch", "nested", "multisig", "executed_multisig", "proxy")


def _wrapped(draw, proto, ids, pool, who, calls, wrap):
    chain = proto.chain
    if wrap == "batch_all":
        return who, chain.batch_all_call(calls)
    if wrap == "batch":
        return who, chain.batch_call(calls)
    if wrap == "nested":
        _, more = draw(leaves(proto, ids, pool))
        return who, chain.batch_call([chain.batch_all_call(calls), chain.batch_all_call(more)])
    if wrap == "multisig":  # an unexecuted copy, then the bare remarks
        remarks = [c for c in calls if c.value["call_module"] == "System"]
        first = first_approval(chain, f"//{who}", ["Ferdie"], chain.batch_all_call(calls))
        return who, chain.batch_all_call([first, *remarks])
    if wrap == "executed_multisig":  # run by a funded 1-of-2 multisig of the signer's
        others = sorted([chain.address("Ferdie")], key=chain.substrate.ss58_decode)
        params = {"other_signatories": others, "call": chain.batch_all_call(calls)}
        return who, chain.call("Multisig", "as_multi_threshold_1", params)
    # Dave signs and pays; the calls run with Eve's origin
    return "Dave", chain.batch_all_call(
        [calls[0], chain.proxy_call(chain.address("Eve"), chain.batch_all_call(calls[1:] or calls))]
    )


def check_random_trees(world, examples: int, derandomize: bool) -> None:
    proto, ids, pool = world
    seen: set[str] = set()

    @settings(
        max_examples=examples,
        deadline=None,
        derandomize=derandomize,
        suppress_health_check=list(HealthCheck),
    )
    @given(data=st.data())
    def run(data):
        who, wrap, call = data.draw(trees(proto, ids, pool))
        seen.add(wrap)
        proto.chain.submit(f"//{who}", call, check=False)
        assert_books_within_chain(proto)

    run()
    assert seen == set(WRAPS), f"not every kind of call tree was tried: {set(WRAPS) - seen}"


def test_random_call_trees_never_let_the_books_exceed_the_chain(world):
    check_random_trees(world, 24, derandomize=True)


@pytest.mark.slow
def test_random_call_trees_long(world):
    check_random_trees(world, 150, derandomize=False)


def _training(proto: ProtocolClient, name: str, **kw) -> int:
    """A model of Dev1..Dev3 that Bob and Charlie staked on, approved and training."""
    chain = proto.chain
    validators = [chain.address(v) for v in VALIDATORS]
    mid = proto.register_model("//Ferdie", name, CID_A, CID_W, validators=validators, **kw)
    mid = mid.created_id("model")
    for who in ("//Bob", "//Charlie"):
        proto.stake(who, mid, 10 * UNIT)
    from decentralml_jupyter.protocol import ApproveModel

    pid = proto.propose("//Bob", mid, ApproveModel(), 10).created_id("proposal")
    proto.vote("//Bob", pid, True)
    proto.vote("//Charlie", pid, True)
    chain.new_blocks(11)
    proto.start_training("//Ferdie", mid)
    return mid


def test_deposits_and_bounties_count_only_what_the_chain_moved(devchain_url, tmp_path):
    """drt deposits and prediction-market bounties against the real chain: a deposit copied
    into an unexecuted multisig approval, a deposit whose transfer failed after the remark in
    a non-atomic batch, one transfer under two copies of the update's remark, and a bounty in an
    unexecuted approval are never credited; honest ones are; the books stay within the
    chain's balances throughout."""
    from decentralml_jupyter.protocol import RewardPolicy

    chain = Chain(devchain_url)
    proto = ProtocolClient(chain, Indexer(chain, tmp_path / "d.sqlite"))
    try:
        deposit = 2 * UNIT
        mid = _training(proto, "vs-drt", reward_policy=RewardPolicy("drt"), deposit=deposit)
        pool = proto.state().model(mid).pool
        spec = encoders.round_spec(2, 1, submit_blocks=40, aggregate_blocks=40, reward=4 * UNIT)
        rid = proto.start_round("//Ferdie", mid, spec).created_id("round")
        remark = encoders.submit_update(rid, CID_W, 10, deposit)
        pay = chain.transfer_call(pool, deposit)
        pool_before = chain.balance(pool).free

        # an unexecuted multisig approval holding the deposit, then the bare remark
        inner = chain.batch_all_call([pay, chain.remark_call(remark)])
        forged = chain.batch_all_call(
            [first_approval(chain, "//Bob", ["Charlie"], inner), chain.remark_call(remark)]
        )
        receipt = chain.submit("//Bob", forged)
        state = proto.indexer.wait_for(receipt.block_number)
        assert chain.balance(pool).free == pool_before
        assert state.round(rid).submitted == ()
        assert_books_within_chain(proto)

        # a non-atomic batch: the remark runs, the deposit's transfer after it fails
        too_much = chain.transfer_call(pool, 10**30)
        call = chain.batch_call([chain.remark_call(remark), too_much])
        receipt = chain.submit("//Bob", call, check=False)
        assert receipt.events_of("Utility", "BatchInterrupted")
        state = proto.indexer.wait_for(receipt.block_number)
        assert state.round(rid).submitted == ()
        assert any("no unused transfer" in e.reason for e in state.errors_at(
            receipt.block_number, receipt.extrinsic_index
        ))  # fmt: skip
        assert_books_within_chain(proto)

        # one deposit, the update's remark twice: one update, the second refused
        dup = chain.batch_all_call([pay, chain.remark_call(remark), chain.remark_call(remark)])
        receipt = chain.submit("//Bob", dup)
        state = proto.indexer.wait_for(receipt.block_number)
        [update] = state.round(rid).updates
        assert (update.deposit, update.deposit_status) == (deposit, "held")
        assert state.pool(mid).deposits == deposit
        assert chain.balance(pool).free == pool_before + deposit
        assert_books_within_chain(proto)

        # the client's own path: the deposit travels with the update
        proto.submit_update("//Charlie", rid, CID_A, 5)
        assert proto.state().pool(mid).deposits == 2 * deposit
        assert_books_within_chain(proto)

        # a bounty copied into an unexecuted approval is not credited; an honest one is
        market = _training(
            proto, "vs-market", reward_policy=RewardPolicy("prediction-market")
        )  # fmt: skip
        mpool = proto.state().model(market).pool
        commitment = "0x" + "42" * 32
        start = encoders.start_rounds(market, spec, 1, 9 * UNIT, commitment)
        fund = chain.transfer_call(mpool, 13 * UNIT)
        inner = chain.batch_all_call([fund, chain.remark_call(start)])
        forged = chain.batch_all_call(
            [first_approval(chain, "//Ferdie", ["Charlie"], inner), chain.remark_call(start)]
        )
        receipt = chain.submit("//Ferdie", forged)
        state = proto.indexer.wait_for(receipt.block_number)
        assert state.markets(market) == [] and state.pool(market).bounties == 0
        assert_books_within_chain(proto)
        proto.start_rounds("//Ferdie", market, spec, 1, 9 * UNIT, commitment)
        [made] = proto.state().markets(market)
        assert (made.bounty, made.status) == (9 * UNIT, "running")
        assert proto.state().pool(market).bounties == 9 * UNIT
        assert_books_within_chain(proto)
    finally:
        proto.close()
