"""Rewards for improvement on the real dev network: workers whose data pull the model away
from what the validators' held-out file says (their targets negated) make every round worse
than its base. A model whose owner rejects such rounds keeps its weights, pays nobody, slashes
nobody, and gets its budget back; one that adopts them advances, unpaid, refunded too."""

from __future__ import annotations

import pytest

from tests.agents.test_own_data_devnet import WORKERS, own_data_network, train_plans

UNIT = 10**12


@pytest.mark.chain
def test_rounds_that_make_the_model_worse_pay_nobody(tmp_path):
    from decentralml_jupyter import Session

    with own_data_network(tmp_path, worker_sign=-1) as (data, features, dfml, info, url, st):
        feature_args = [a for f in features for a in ("--feature", f)]
        ids = {}
        for rule in ("reject", "adopt"):
            sub = dfml(
                "model", "submit", str(tmp_path / "diabetes.keras"), "--metric", "mae",
                "--unimproved", rule, "--improvement-tolerance", "1.0", *feature_args,
            )  # fmt: skip
            ids[rule] = str(sub["model_id"])
            shown = dfml("model", "show", ids[rule])
            assert shown["improvement"] == {"tolerance": 1.0, "unimproved": rule}
        plans = []
        train_plans(
            dfml, list(ids.values()), epochs=3, rounds=1, extra=("--reward", str(10 * UNIT)),
            on_started=plans.extend, expect=None,
        )  # fmt: skip
        with Session(url, st) as s:
            for rule, mid in ids.items():
                [rnd] = s.rounds(int(mid))
                assert rnd.improved is False, rnd.note
                assert rnd.metrics["mae"] > rnd.metrics["base_mae"] + 1.0
                assert rnd.rewards == {} and rnd.slashes == {}
                refunds = [p for p in s.payouts() if p.reason == "round_refund"
                           and p.model_id == int(mid)]  # fmt: skip
                assert [p.amount for p in refunds] == [10 * UNIT]
                model = s.model(int(mid))
                if rule == "reject":
                    assert rnd.status == "failed" and "not adopted" in rnd.note
                    assert model.round == 0 and model.global_cid == model.weights_cid
                else:
                    assert rnd.status == "finalized" and "adopted without rewards" in rnd.note
                    assert model.round == 1 and model.global_cid == rnd.aggregate_cid
        assert len(rnd.submitted) == WORKERS
