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
