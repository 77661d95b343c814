"""Validators sharing a process (`devnet up --validator-processes 1`, `dfml validator --key
//Dev1 --key //Dev2 --key //Dev3`) on the real dev network: one process, one TensorFlow
runtime, and still three validators, each attesting and approving payouts with its own key.
"""

from __future__ import annotations

import pytest

from tests.conftest import approve_and_start, dev_network, wait_until

UNIT = 10**12


def _events(chain, block_number: int, module: str, event: str, role: str) -> dict[int, str]:
    """A block's ``module.event`` events: extrinsic index -> the account in ``role``."""
    found = chain.block(block_number).events
    return {
        e["extrinsic_index"]: chain.address(e["attributes"][role])
        for e in found
        if (e["module"], e["event"]) == (module, event)
    }


def _signers(chain, block_number: int) -> dict[int, str]:
    """The signed extrinsics of a block: extrinsic index -> its signer's address."""
    block = chain.block(block_number)
    out = {}
    for i, x in enumerate(chain.extrinsics(block.hash)):
        address = x.value.get("address")
        if address:
            out[i] = chain.address(address)
    return out


@pytest.mark.chain
def test_three_validators_in_one_process_each_attest_with_their_own_key(tmp_path):
    from decentralml_jupyter import fl
    from decentralml_jupyter.agents.validator import primaries
    from decentralml_jupyter.chain import Chain
    from decentralml_jupyter.protocol.client import ProtocolClient

    up = dev_network(
        "--workers", "3", "--validators", "3", "--validator-processes", "1",
        "--worker-processes", "1", "--clock", "1",
    )  # fmt: skip
    with up as (dfml, info, url, _):
        validators = {v["address"]: v for v in info["validators"]}
        assert len(validators) == 3
        assert len({v["pid"] for v in validators.values()}) == 1  # one process hosts them
        assert all(v["running"] for v in dfml("devnet", "status")["validators"])

        path = tmp_path / "hosted.keras"
        fl.mlp(64, 10, hidden=(16,)).save(path)
        mid = str(dfml("model", "submit", str(path))["model_id"])
        assert set(dfml("model", "show", mid)["validators"]) == set(validators)
        approve_and_start(dfml, mid, 3, deadline=12)
        # two rounds back to back: their primaries (2 of 3, rotating) cover all three
        start = dfml(
            "round", "start", mid, "--clients", "3", "--rounds", "2", "--epochs", "2",
            "--reward", str(10 * UNIT), "--deadline", "40", "--aggregate-deadline", "60",
        )  # fmt: skip
        final = dfml("round", "watch", str(start["round_id"]), "--plan", "--timeout", "600")
        plan = final["plan"]
        assert [p["status"] for p in plan] == ["finalized", "finalized"], plan
        assert final["metrics"]["accuracy"] > 0.3

        with ProtocolClient(Chain(url)) as proto:
            state = proto.state()
        rounds = [state.round(p["round_id"]) for p in plan]
        with Chain(url) as chain:
            attesters = set()
            for rnd in rounds:
                mine = [a for a in rnd.attestations if a.round_id == rnd.round_id]
                who = [a.validator for a in mine]
                assert len(who) >= 2 and len(set(who)) == len(who), who  # a quorum, each once
                assert set(who) <= set(validators)
                # the round's primaries attested (no backup was needed in one process)
                assert set(primaries(validators, rnd.round_id)) <= set(who)
                # judged alike: one result, the one the round adopted
                assert {a.digest for a in mine} == {mine[0].digest}
                assert {a.aggregate_cid for a in mine} == {rnd.aggregate_cid}
                for a in mine:
                    # its attestation's extrinsic is signed by its own account: the events of
                    # the block name it as the sender of a remark in an extrinsic it signed
                    signers = _signers(chain, a.block_number)
                    remarks = _events(chain, a.block_number, "System", "Remarked", "sender")
                    sent = {i for i, who in remarks.items() if who == a.validator}
                    assert sent and all(signers.get(i) == a.validator for i in sent), (a, signers)
                attesters |= set(who)
            assert attesters == set(validators)  # every hosted validator attested

            # the rounds' rewards are paid out of the 2-of-3 multisig pool: each payout executed
            # with the approvals of two validators of this process, each signed with its own key
            def paid():
                rows = [p for p in dfml("payouts") if p["reason"] == "round_reward"]
                return rows if rows and all(p["status"] == "paid" for p in rows) else None

            rewards = wait_until(paid, 180, "the rewards' payouts")
            approvers = set()
            for block in {p["paid_block"] for p in rewards}:
                executed = _events(chain, block, "Multisig", "MultisigExecuted", "approving")
                approvers |= set(executed.values())
            assert approvers and approvers <= set(validators)


def test_validator_keys_repeat_and_replace_the_sessions_key(monkeypatch):
    """`dfml validator --key //Dev1 --key //Dev2` hosts exactly those two: the agent's own
    keys replace the session's (they used to be added to it); without any, the session's."""
    from decentralml_jupyter import Session
    from decentralml_jupyter.agents import validator

    a = validator.build_parser().parse_args(
        ["--url", "ws://x", "--storage", "http://y", "--key", "//Dev1", "--key", "//Dev2"]
    )
    assert a.key == ["//Dev1", "//Dev2"]
    seen = []
    monkeypatch.setattr(validator, "main", lambda argv: seen.append(argv))
    s = Session("ws://127.0.0.1:1", "http://127.0.0.1:2", key="//Alice")
    s.run_agent("validator", ["--key", "//Dev1", "--key", "//Dev2", "--poll", "1"])
    s.run_agent("validator", ["--poll", "1"])
    keys = [[v for k, v in zip(argv, argv[1:], strict=False) if k == "--key"] for argv in seen]
    assert keys == [["//Dev1", "//Dev2"], ["//Alice"]]


def test_devnet_groups_consecutive_agents_into_processes():
    from decentralml_jupyter.agents.devnet import _groups, _hosts
    from decentralml_jupyter.errors import UsageError

    assert [list(g) for g in _groups(3, 1)] == [[0, 1, 2]]
    assert [list(g) for g in _groups(5, 3)] == [[0], [1, 2], [3, 4]]
    assert [list(g) for g in _groups(3, 3)] == [[0], [1], [2]]
    assert _groups(0, 0) == []  # devnet up --workers 0: no worker process
    assert _hosts("validator", None, 3, 3) == 3  # default: one process per validator
    with pytest.raises(UsageError, match="--validator-processes must be between 1 and"):
        _hosts("validator", 4, 3, 3)
