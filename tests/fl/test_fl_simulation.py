"""In-process simulation: quality targets, robustness to poisoning, privacy options."""

from __future__ import annotations

import pytest

from decentralml_jupyter.fl import FlError, simulate, train_centralised

# One budget for the federated and the centralised run: ROUNDS * EPOCHS passes over the data.
ROUNDS, EPOCHS, BATCH, LR = 30, 2, 16, 0.1
POISON_ROUNDS = 20


def test_noniid_fedavg_close_to_centralised(digits):
    central = train_centralised(digits, epochs=ROUNDS * EPOCHS, batch_size=BATCH, lr=LR)
    kw = dict(partition="dirichlet", alpha=0.5, rounds=ROUNDS, epochs=EPOCHS, batch_size=BATCH)
    hist = simulate(digits, 10, strategy="fedavg", lr=LR, **kw)
    assert [r["round"] for r in hist] == list(range(1, ROUNDS + 1))
    fed = hist[-1]["accuracy"]
    print(f"centralised {central['accuracy']:.4f}  federated {fed:.4f}")
    assert central["accuracy"] > 0.9
    assert fed >= central["accuracy"] - 0.03
    # Training did something: the first round is clearly worse than the last.
    assert hist[0]["accuracy"] < fed - 0.1


@pytest.fixture(scope="module")
def clean_accuracy(digits):
    return _run(digits, "fedavg", attack="label_flip", poisoners=0)


def _run(digits, strategy, attack, poisoners=3, **skw):
    hist = simulate(
        digits,
        10,
        partition="iid",
        strategy=strategy,
        strategy_kwargs=skw,
        rounds=POISON_ROUNDS,
        epochs=EPOCHS,
        batch_size=BATCH,
        lr=LR,
        poisoners=poisoners,
        attack=attack,
    )
    return hist[-1]["accuracy"]


def test_label_flipping_median_holds_fedavg_drops(digits, clean_accuracy):
    fedavg = _run(digits, "fedavg", "label_flip")
    median = _run(digits, "fedmedian", "label_flip")
    print(f"clean {clean_accuracy:.4f}  fedavg {fedavg:.4f}  median {median:.4f}")
    assert median >= clean_accuracy - 0.05
    assert fedavg <= clean_accuracy - 0.04
    assert median > fedavg


def test_scaled_updates_krum_holds_fedavg_collapses(digits, clean_accuracy):
    fedavg = _run(digits, "fedavg", "scale")
    multikrum = _run(digits, "multikrum", "scale", num_malicious=3, num_to_keep=5)
    print(f"clean {clean_accuracy:.4f}  fedavg {fedavg:.4f}  multikrum {multikrum:.4f}")
    assert multikrum >= clean_accuracy - 0.05
    assert fedavg < 0.5


def test_norm_bound_rejects_scaled_updates_and_keeps_accuracy(digits):
    kw = dict(rounds=3, epochs=1, poisoners=2, attack="scale")
    # Honest deltas here have norm ~0.5; the attack multiplies them by 10.
    hist = simulate(digits, 5, max_delta_norm=2.0, **kw)
    unchecked = simulate(digits, 5, **kw)
    for r in hist:
        assert set(r["rejected"]) == {"client-000", "client-001"}
        assert r["accepted"] == ["client-002", "client-003", "client-004"]
        assert all("exceeds" in reason for reason in r["rejected"].values())
    assert hist[-1]["accuracy"] > 0.5
    assert hist[-1]["accuracy"] > unchecked[-1]["accuracy"] + 0.3


def test_secure_aggregation_matches_plain_fedavg(digits):
    kw = dict(rounds=3, epochs=1, partition="iid", seed=1)
    plain = simulate(digits, 4, **kw)
    masked = simulate(digits, 4, secure_aggregation=True, **kw)
    for a, b in zip(plain, masked, strict=True):
        assert a["accuracy"] == pytest.approx(b["accuracy"], abs=0.01)
        assert a["loss"] == pytest.approx(b["loss"], abs=1e-3)
    with pytest.raises(FlError):
        simulate(digits, 4, strategy="krum", rounds=1, secure_aggregation=True)


def test_simulation_is_deterministic_and_reports_contributions(digits):
    kw = dict(rounds=2, epochs=1, poisoners=1, attack="label_flip", contributions=True)
    a = simulate(digits, 4, **kw)
    b = simulate(digits, 4, **kw)
    assert [(r["accuracy"], r["loss"]) for r in a] == [(r["accuracy"], r["loss"]) for r in b]
    shares = a[-1]["contributions"]
    assert sum(shares.values()) == pytest.approx(1.0)
    assert shares["client-000"] == min(shares.values())


def test_dp_and_tabular_dataset_run():
    hist = simulate("breast_cancer", 3, rounds=3, epochs=2, dp=(5.0, 0.01), hidden=(16,))
    assert hist[-1]["accuracy"] > 0.85


def test_bad_simulation_arguments(digits):
    with pytest.raises(FlError):
        simulate(digits, 3, rounds=0)
    with pytest.raises(FlError):
        simulate(digits, 3, rounds=1, attack="bribe")
    with pytest.raises(FlError):
        simulate(digits, 3, rounds=1, poisoners=["mallory"])


def test_clients_per_round_trains_a_seeded_subset(digits):
    kw = dict(partition="iid", rounds=3, epochs=1, hidden=(8,), clients_per_round=4)
    hist = simulate(digits, 10, **kw)
    chosen = [r["accepted"] for r in hist]
    assert all(len(c) == 4 == len(set(c)) for c in chosen)
    assert len({tuple(c) for c in chosen}) > 1  # a fresh draw each round
    assert chosen == [r["accepted"] for r in simulate(digits, 10, **kw)]  # and reproducible
    with pytest.raises(FlError, match="clients_per_round"):
        simulate(digits, 10, rounds=1, clients_per_round=11)
