"""The Chain facade against the real dev chain: transfers, failures, batches, multisig, events."""

from __future__ import annotations

import hashlib
import threading

import pytest
from substrateinterface import Keypair

from decentralml_jupyter.chain import Chain
from decentralml_jupyter.errors import (
    ChainNotReachable,
    DispatchFailed,
    KeyLoadError,
    TransactionRejected,
    UsageError,
)

UNIT = 10**12


def test_transfer_moves_the_exact_amount(chain):
    before_a, before_b = chain.balance("Alice").free, chain.balance("Dev1").free
    receipt = chain.transfer("//Alice", "Dev1", 3 * UNIT + 7)
    assert receipt.success and receipt.error is None
    assert receipt.block_number >= 1 and receipt.block_hash.startswith("0x")
    assert chain.balance("Dev1").free == before_b + 3 * UNIT + 7
    assert chain.balance("Alice").free == before_a - 3 * UNIT - 7 - receipt.fee
    assert receipt.fee > 0
    transfers = receipt.events_of("Balances", "Transfer")
    assert transfers and transfers[0]["attributes"]["amount"] == 3 * UNIT + 7


def test_unfunded_sender_is_rejected_and_nothing_changes(chain):
    nobody = Keypair.create_from_mnemonic(Keypair.generate_mnemonic())
    before = chain.balance("Bob").free
    head = chain.block_number()
    with pytest.raises(TransactionRejected) as err:
        chain.transfer(nobody, "Bob", UNIT)
    assert "payment" in str(err.value) and "fund" in err.value.hint
    assert chain.balance("Bob").free == before
    assert chain.block_number() == head


def test_bad_signature_is_rejected_and_nothing_changes(chain):
    alice = chain.keypair("//Alice")
    call = chain.transfer_call("Bob", UNIT)
    good = chain.sign(alice, call)
    sig = bytearray(bytes.fromhex(good.value["signature"]["Sr25519"][2:]))
    sig[10] ^= 0x01
    bad = chain.substrate.create_signed_extrinsic(call, alice, signature="0x" + sig.hex())
    before = chain.balance("Bob").free
    nonce = chain.nonce("Alice")
    with pytest.raises(TransactionRejected) as err:
        chain.submit_extrinsic(bad)
    assert "badProof" in str(err.value) or "badproof" in str(err.value).lower()
    assert chain.balance("Bob").free == before
    assert chain.nonce("Alice") == nonce


def test_unknown_call_gives_a_clear_error(chain):
    with pytest.raises(UsageError, match="Nope"):
        chain.call("Nope", "nothing", {})
    with pytest.raises(UsageError, match="Balances.teleport"):
        chain.call("Balances", "teleport", {})
    with pytest.raises(UsageError):
        chain.transfer_call("Bob", -5)


def test_remark_with_event_records_the_hash(chain):
    data = b"dfml\x01protocol-style remark"
    receipt = chain.remark("//Alice", data)
    remarked = receipt.events_of("System", "Remarked")
    assert len(remarked) == 1
    attrs = remarked[0]["attributes"]
    assert attrs["hash"] == "0x" + hashlib.blake2b(data, digest_size=32).hexdigest()
    assert attrs["sender"] == chain.address("Alice")


def test_batch_all_is_atomic(chain):
    before_charlie = chain.balance("Charlie").free
    ok = chain.transfer_call("Charlie", 5 * UNIT)
    too_much = chain.transfer_call("Dave", 10**30)
    with pytest.raises(DispatchFailed) as err:
        chain.batch_all("//Alice", [ok, too_much])
    assert err.value.receipt is not None and not err.value.receipt.success
    assert "Balance" in str(err.value)
    assert chain.balance("Charlie").free == before_charlie  # the first transfer was reverted
    receipt = chain.batch_all("//Alice", [ok, chain.remark_call(b"both or none")])
    assert receipt.success
    assert chain.balance("Charlie").free == before_charlie + 5 * UNIT


def test_two_of_three_multisig_executes_only_after_the_second_approval(chain):
    members = ["Dev2", "Dev3", "Dev4"]
    pool = chain.multisig_address(members, 2)
    assert pool == chain.multisig_address(list(reversed(members)), 2)  # order does not matter
    assert pool != chain.multisig_address(members, 3)
    chain.transfer("//Alice", pool, 100 * UNIT)
    dest_before = chain.balance("Eve").free
    payout = chain.transfer_call("Eve", 7 * UNIT)

    first = chain.multisig_approve("//Dev2", payout, members, 2)
    assert first.events_of("Multisig", "NewMultisig")
    assert chain.balance("Eve").free == dest_before
    assert chain.multisig_pending(members, 2, payout) is not None

    second = chain.multisig_approve("//Dev3", payout, members, 2)
    assert second.events_of("Multisig", "MultisigExecuted")
    assert chain.balance("Eve").free == dest_before + 7 * UNIT
    assert chain.multisig_pending(members, 2, payout) is None
    with pytest.raises(UsageError, match="not a member"):
        chain.multisig_approve("//Alice", payout, members, 2)


def test_fee_estimate_matches_the_fee_paid(chain):
    call = chain.transfer_call("Ferdie", UNIT)
    estimate = chain.estimate_fee("//Bob", call)
    receipt = chain.submit("//Bob", call)
    assert estimate > 0
    assert abs(receipt.fee - estimate) <= estimate // 10


def test_subscription_sees_new_blocks_with_events(chain, devchain_url):
    seen = []

    def handler(block):
        if any(e["module"] == "System" and e["event"] == "Remarked" for e in block.events):
            seen.append(block.number)
            return block
        return None

    def submit():
        with Chain(devchain_url) as other:
            other.remark("//Ferdie", b"watched")

    t = threading.Timer(1.0, submit)
    t.start()
    block = chain.subscribe_blocks(handler, timeout=120)  # never pytest's whole limit
    t.join()
    assert block is not None, "no block with the remark arrived in 120 s"
    assert seen and block.number == seen[0]


def test_dev_keys_are_refused_on_a_chain_that_is_not_a_dev_chain(chain, devchain_url, monkeypatch):
    assert chain.is_dev  # Chopsticks: it has dev_newBlock
    live = Chain(devchain_url)
    real_rpc = live._rpc
    answers = {  # what a public node answers: no dev_ RPC, chain type Live
        "rpc_methods": {"methods": ["chain_getHeader", "system_chainType"]},
        "system_chainType": "Live",
    }
    monkeypatch.setattr(live, "_rpc", lambda m, p=None: answers.get(m) or real_rpc(m, p))
    assert live.is_dev is False
    with pytest.raises(KeyLoadError, match="not a dev chain"):
        live.keypair("//Alice")
    assert live.keypair("//Alice", force=True).ss58_address == live.address("Alice")
    live.close()


def test_nothing_listening_gives_the_command_to_start_a_chain():
    with pytest.raises(ChainNotReachable) as err:
        Chain("ws://127.0.0.1:9")
    assert "ws://127.0.0.1:9" in str(err.value)
    assert "dfml chain up" in err.value.hint


def test_a_multisig_whose_approvals_raced_past_the_threshold_still_executes(chain):
    members = ["Dev1", "Dev3", "Dev4"]
    pool = chain.multisig_address(members, 2)
    chain.transfer("//Alice", pool, 50 * UNIT)
    payout = chain.transfer_call("Ferdie", 3 * UNIT)
    weight = chain.substrate.get_payment_info(payout, chain.keypair("//Dev1"))["weight"]
    addrs = sorted((chain.address(m) for m in members), key=chain.substrate.ss58_decode)
    when = None
    for m in ("Dev1", "Dev3"):  # both approve the hash at once, as racing validators do
        me = chain.address(m)
        call = chain.call(
            "Multisig",
            "approve_as_multi",
            {
                "threshold": 2,
                "other_signatories": [a for a in addrs if a != me],
                "maybe_timepoint": when,
                "call_hash": payout.call_hash,
                "max_weight": weight,
            },
        )
        chain.submit("//" + m, call)
        when = chain.multisig_pending(members, 2, payout)["when"]
    assert len(chain.multisig_pending(members, 2, payout)["approvals"]) == 2
    before = chain.balance("Ferdie").free
    chain.multisig_approve("//Dev1", payout, members, 2)  # an approver executes it
    assert chain.balance("Ferdie").free == before + 3 * UNIT
    assert chain.multisig_pending(members, 2, payout) is None


def test_chains_in_several_threads_of_one_process_do_not_trip_each_other(devchain_url):
    # substrate-interface's type registry is per process; unguarded, concurrent connections
    # fail with "Decoder class for Compact<u32> not found"
    errors, results = [], []

    def work():
        try:
            for _ in range(3):
                with Chain(devchain_url) as c:
                    results.append((c.balance("Alice").free > 0, len(c.block(1).events) >= 0))
        except Exception as exc:  # the assertion below reports it
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(results) == 12 and all(all(r) for r in results)


def test_an_extrinsic_a_full_block_dropped_is_submitted_again(chain, monkeypatch):
    """Chopsticks drops an extrinsic that does not fit the block it builds and answers
    ``{"invalid": {"exhaustsResources": null}}`` (seen with 1,000 workers' updates at once);
    it is submitted again, as it was, and its receipt is the block that took it. Any other
    ``invalid`` answer is raised at once (before, both waited out a 30 s timeout)."""
    sub = chain.substrate
    real = sub.rpc_request
    dropped = []

    def full_once(method, params, result_handler=None, **kw):
        if method == "author_submitAndWatchExtrinsic" and not dropped:
            dropped.append(params[0])  # as Chopsticks answers once the block is full
            message = {"params": {"result": {"invalid": {"exhaustsResources": None}}}}
            return result_handler(message, 0, "sub-1") or {}
        if method == "author_unwatchExtrinsic" and params == ["sub-1"]:
            return {"result": True}
        return real(method, params, result_handler=result_handler, **kw)

    monkeypatch.setattr(sub, "rpc_request", full_once)
    before = chain.nonce("//Dev1")
    receipt = chain.remark("//Dev1", b"again")
    assert receipt.success and dropped and chain.nonce("//Dev1") == before + 1
    assert chain.block_hash(receipt.block_number) == receipt.block_hash
    monkeypatch.setattr(sub, "rpc_request", real)
    with pytest.raises(TransactionRejected, match="stale"):
        chain.submit("//Dev1", chain.remark_call(b"old nonce"), nonce=before)
