"""Agents protect their operator: where a worker stakes, which round hints it trains with,
and rejection reasons that always fit an attestation."""

from __future__ import annotations

from hashlib import blake2b
from types import SimpleNamespace

import pytest

from decentralml_jupyter.agents.validator import fit_reason
from decentralml_jupyter.agents.worker import MAX_SLASH_PERMILL, Worker, hint_problem
from decentralml_jupyter.protocol import CallContext, RewardPolicy, State, encoders
from decentralml_jupyter.protocol.accounts import ss58
from decentralml_jupyter.protocol.calls import MAX_REASON_BYTES, Rejection

OWNER, V1, V2 = (ss58(blake2b(n, digest_size=32).digest()) for n in (b"o", b"v1", b"v2"))


def _model(validators, slash_permill=0):
    state = State()
    remark = encoders.register_model(
        "m",
        "QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG",
        "QmT78zSuBmuS4z925WZfrqQ1qHaJ56DQaTfyMUF7F8ff5o",
        validators=validators,
        reward_policy=RewardPolicy("proportional", 0, slash_permill),
    )
    assert state.apply(CallContext(0, "0x00", 0, 0, OWNER), remark).ok
    return state.models()[0]


def _policy(models=None, max_slash=MAX_SLASH_PERMILL, stake=10):
    return SimpleNamespace(models=models, max_slash_permill=max_slash, stake_amount=stake)


def test_a_worker_stakes_only_where_its_policy_allows():
    refusal = Worker.stake_refusal
    assert refusal(_policy(), _model([V1, V2])) is None
    # a pool one person holds: the owner's own account, or a single validator's
    assert "multisig" in refusal(_policy(), _model([]))
    assert "multisig" in refusal(_policy(), _model([V1]))
    # a model that slashes all of a rejected worker's stake
    assert "slashes 100%" in refusal(_policy(), _model([V1, V2], slash_permill=1_000_000))
    assert refusal(_policy(max_slash=1_000_000), _model([V1, V2], 1_000_000)) is None
    # the operator named its models: only those
    named = _model([V1, V2])
    assert refusal(_policy(models={named.id + 1}), named) == (
        "not one of the models this worker serves"
    )
    assert refusal(_policy(models={named.id}), named) is None


@pytest.mark.parametrize(
    ("hints", "problem"),
    [
        ({"epochs": 1, "batch_size": 32, "learning_rate": 0.05}, None),
        ({"learning_rate": 1000.0}, "learning rate"),
        ({"learning_rate": 0.0}, None),  # 0: the model's own optimizer's rate
        ({"learning_rate": float("nan")}, "learning rate"),
        ({"epochs": 10_000}, "epochs"),
        ({"batch_size": 10**9}, "batch size"),
    ],
)
def test_hostile_round_hints_are_refused(hints, problem):
    found = hint_problem(hints)
    if problem is None:
        assert found is None
    else:
        assert problem in found


@pytest.mark.parametrize("text", ["x" * 500, "é" * 100, "update norm 1.2e+03 exceeds " * 4])
def test_rejection_reasons_always_fit_an_attestation(text):
    reason = fit_reason(text)
    assert 0 < len(reason.encode()) <= MAX_REASON_BYTES
    assert text.startswith(reason)
    # the codec accepts it: the attestation encodes
    encoded = encoders.attest_remark(
        1,
        "QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG",
        accuracy=0.5,
        loss=1.0,
        contributions={},
        rejected={V1: reason},
    )
    assert encoded and Rejection(V1, reason).reason == reason
