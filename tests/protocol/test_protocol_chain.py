"""The protocol end to end on the real dev chain: calls as remarks, the indexer's replay,
its persistence and resume, rejected calls, and payouts that need k validator approvals.
"""

from __future__ import annotations

import pytest

from decentralml_jupyter.chain import Chain
from decentralml_jupyter.errors import UsageError
from decentralml_jupyter.protocol import encoders
from decentralml_jupyter.protocol.client import ProtocolClient, ProtocolRejected
from decentralml_jupyter.protocol.errors import ProtocolError
from decentralml_jupyter.protocol.indexer import Indexer

UNIT = 10**12
CID_A = "QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG"
CID_W = "QmT78zSuBmuS4z925WZfrqQ1qHaJ56DQaTfyMUF7F8ff5o"


@pytest.fixture()
def proto(devchain_url, tmp_path):
    chain = Chain(devchain_url)
    client = ProtocolClient(chain, Indexer(chain, tmp_path / "index.sqlite"))
    try:
        yield client
    finally:
        client.close()


def test_model_stake_vote_lifecycle_and_replay(proto, tmp_path, devchain_url):
    chain = proto.chain
    validators = [chain.address(n) for n in ("Dev1", "Dev2", "Dev3")]
    reg = proto.register_model(
        "//Alice", "digits-mlp", CID_A, CID_W, licence="apache-2.0", validators=validators
    )
    model_id = reg.created_id("model")
    model = proto.state().model(model_id)
    assert model.owner == chain.address("Alice") and model.status == "proposed"
    assert model.pool == chain.multisig_address(validators, 2) and model.pool_threshold == 2

    pool_before = chain.balance(model.pool).free
    proto.stake("//Bob", model_id, 40 * UNIT)
    proto.stake("//Charlie", model_id, 20 * UNIT)
    assert chain.balance(model.pool).free == pool_before + 60 * UNIT  # real value moved
    stakes = {s.account: s.amount for s in proto.state().stakes(model_id=model_id)}
    assert stakes == {chain.address("Bob"): 40 * UNIT, chain.address("Charlie"): 20 * UNIT}

    prop = proto.propose(
        "//Alice", model_id, encoders.action_from_params("ApproveModel"), voting_blocks=10
    )
    pid = prop.created_id("proposal")
    proto.vote("//Bob", pid, True)
    proto.vote("//Charlie", pid, False)
    proto.vote("//Charlie", pid, True)  # a later vote replaces the earlier
    chain.new_blocks(11)
    state = proto.state()
    assert state.proposal(pid).status == "passed"
    assert state.model(model_id).status == "approved"

    # a fresh indexer replaying from genesis reaches the same state, byte for byte
    fresh = Indexer(Chain(devchain_url), tmp_path / "fresh.sqlite")
    assert fresh.sync(proto.indexer.block_number).state_hash() == state.state_hash()
    fresh.close()


def test_rejected_calls_change_nothing_and_are_recorded(proto):
    chain = proto.chain
    validators = [chain.address(n) for n in ("Dev1", "Dev2")]
    reg = proto.register_model("//Alice", "m2", CID_A, CID_W, validators=validators)
    model_id = reg.created_id("model")

    def books(state):  # the hash also covers the block height, which moves on
        return [
            [x.to_json() for x in rows]
            for rows in (state.models(), state.stakes(), state.proposals(), state.payouts())
        ]

    before = books(proto.state())
    with pytest.raises(ProtocolRejected, match="unstake"):
        proto.unstake("//Dave", model_id, 5 * UNIT)
    # a stake remark with no transfer in its batch
    with pytest.raises(ProtocolRejected, match="transfer"):
        proto.submit("//Dave", encoders.stake(model_id, 5 * UNIT))
    with pytest.raises(ProtocolRejected):
        proto.vote("//Dave", 999_999, True)
    # garbage after the protocol prefix
    with pytest.raises(ProtocolRejected):
        proto.submit("//Dave", b"dfml\x01\xff\xff")
    state = proto.state()
    assert books(state) == before
    errors = state.errors(account=chain.address("Dave"))
    assert len(errors) >= 4 and all(e.reason for e in errors)


def test_unstake_payout_executes_only_with_k_validator_approvals(proto):
    chain = proto.chain
    validators = [chain.address(n) for n in ("Dev2", "Dev3", "Dev4")]
    model_id = proto.register_model(
        "//Alice", "m3", CID_A, CID_W, validators=validators
    ).created_id("model")
    proto.stake("//Eve", model_id, 30 * UNIT)
    proto.unstake("//Eve", model_id, 10 * UNIT)
    lock = proto.state().params.unstake_lock_blocks
    chain.new_blocks(lock + 1)
    pending = [p for p in proto.state().pending_payouts(ready_only=True) if p.model_id == model_id]
    assert len(pending) == 1 and pending[0].amount == 10 * UNIT and pending[0].reason == "unstake"
    payout = pending[0]
    eve_before = chain.balance("Eve").free

    proto.approve_payout("//Dev2", payout.id)  # 1 of 2: nothing moves yet
    assert chain.balance("Eve").free == eve_before
    assert any(p.id == payout.id for p in proto.state().pending_payouts())
    with pytest.raises(UsageError, match="not a member"):
        proto.approve_payout("//Alice", payout.id)

    proto.approve_payout("//Dev4", payout.id)  # 2 of 2: executes and settles
    assert chain.balance("Eve").free == eve_before + 10 * UNIT
    state = proto.state()
    assert not any(p.id == payout.id for p in state.pending_payouts())
    assert [s.amount for s in state.stakes(model_id=model_id, account=chain.address("Eve"))] == [
        20 * UNIT
    ]


def test_several_payouts_of_a_pool_execute_as_one_multisig_call(proto):
    chain = proto.chain
    validators = [chain.address(n) for n in ("Dev2", "Dev3", "Dev4")]
    model_id = proto.register_model(
        "//Alice", "m3b", CID_A, CID_W, validators=validators
    ).created_id("model")
    for who, amount in (("//Eve", 7), ("//Ferdie", 9)):
        proto.stake(who, model_id, 20 * UNIT)
        proto.unstake(who, model_id, amount * UNIT)
    chain.new_blocks(proto.state().params.unstake_lock_blocks + 1)
    owed = [p for p in proto.state().pending_payouts(ready_only=True) if p.model_id == model_id]
    assert sorted(p.amount for p in owed) == [7 * UNIT, 9 * UNIT]
    ids = [p.id for p in owed]
    before = {n: chain.balance(n).free for n in ("Eve", "Ferdie")}
    proto.approve_payout("//Dev3", ids)  # one approval covers both
    assert {n: chain.balance(n).free for n in before} == before
    receipt = proto.approve_payout("//Dev2", list(reversed(ids)))  # the same call, any order
    assert chain.balance("Eve").free == before["Eve"] + 7 * UNIT
    assert chain.balance("Ferdie").free == before["Ferdie"] + 9 * UNIT
    paid = [p for p in proto.state().payouts("paid") if p.id in ids]
    assert {p.paid_block for p in paid} == {receipt.block_number}
    other_validators = [chain.address(n) for n in ("Dev1", "Dev2")]
    other = proto.register_model(
        "//Alice", "m3c", CID_A, CID_W, validators=other_validators
    ).created_id("model")
    proto.stake("//Eve", other, 5 * UNIT)
    proto.unstake("//Eve", other, 5 * UNIT)
    chain.new_blocks(proto.state().params.unstake_lock_blocks + 1)
    elsewhere = next(p for p in proto.state().pending_payouts() if p.model_id == other)
    with pytest.raises(ProtocolError, match="not pending"):
        proto.approve_payout("//Dev2", [ids[0], elsewhere.id])  # ids[0] is paid
    proto.stake("//Ferdie", model_id, 20 * UNIT)
    proto.unstake("//Ferdie", model_id, 1 * UNIT)
    chain.new_blocks(proto.state().params.unstake_lock_blocks + 1)
    mine = next(p for p in proto.state().pending_payouts() if p.model_id == model_id)
    with pytest.raises(ProtocolError, match="different pools"):
        proto.approve_payout("//Dev2", [mine.id, elsewhere.id])


def test_indexer_resumes_without_rereading(proto, tmp_path, devchain_url):
    proto.register_model("//Ferdie", "m4", CID_A, CID_W)
    done = proto.indexer.block_number
    proto.indexer.close()
    reopened = Indexer(Chain(devchain_url), tmp_path / "index.sqlite")
    assert reopened.block_number == done  # resumed from its snapshot
    assert reopened.state.state_hash() == proto.state().state_hash()
    reopened.chain.new_blocks(2)
    asked: list[int] = []
    real_hash, real_hashes = reopened.chain.block_hash, reopened.chain.block_hashes
    reopened.chain.block_hash = lambda n: asked.append(n) or real_hash(n)
    # new blocks' hashes come in one request per chunk
    reopened.chain.block_hashes = lambda a, b: asked.extend(range(a, b + 1)) or real_hashes(a, b)
    reopened.sync()
    assert reopened.block_number >= done + 2
    # it read nothing before its snapshot: the indexed block (to check it is still this
    # chain's), then only the new ones
    assert asked[0] == done and sorted(set(asked[1:])) == list(range(done + 1, done + 3))
    reopened.close()
    proto.indexer = Indexer(proto.chain, tmp_path / "index.sqlite")


def test_task_lifecycle_pays_accepted_work_and_refunds_the_rest(proto):
    chain = proto.chain
    validators = [chain.address(n) for n in ("Dev1", "Dev2", "Dev3")]
    model_id = proto.register_model(
        "//Alice", "m5", CID_A, CID_W, validators=validators
    ).created_id("model")
    pool = proto.state().model(model_id).pool
    task = proto.create_task("//Alice", model_id, "data_annotator", 4 * UNIT, 2, 12)
    task_id = task.created_id("task")
    assert proto.state().task(task_id).escrow == 8 * UNIT
    proto.assign_task("//Bob", task_id)
    proto.assign_task("//Charlie", task_id)
    with pytest.raises(ProtocolRejected):
        proto.assign_task("//Dave", task_id)  # both slots taken
    sub_b = proto.submit_result("//Bob", task_id, CID_A).created_id("submission")
    sub_c = proto.submit_result("//Charlie", task_id, CID_W).created_id("submission")
    with pytest.raises(ProtocolRejected):
        proto.accept_submission("//Bob", sub_b)  # only the creator decides (manual)
    proto.accept_submission("//Alice", sub_b)
    proto.reject_submission("//Alice", sub_c, "labels are off")
    state = proto.state()
    reward = next(
        p
        for p in state.pending_payouts()
        if p.dest == chain.address("Bob") and p.model_id == model_id and p.reason == "task_reward"
    )
    assert reward.amount == 4 * UNIT and reward.reason == "task_reward" and reward.pool == pool
    bob_before = chain.balance("Bob").free
    proto.approve_payout("//Dev1", reward.id)
    proto.approve_payout("//Dev3", reward.id)  # 2 of 3 validators: executed
    assert chain.balance("Bob").free == bob_before + 4 * UNIT
    chain.new_blocks(12 + proto.state().params.task_review_blocks + 1)
    refund = [p for p in proto.state().pending_payouts() if p.reason == "task_refund"]
    assert [p.amount for p in refund if p.model_id == model_id] == [4 * UNIT]
