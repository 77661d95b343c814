"""Every strategy on the real dev network, configured per model and carried across rounds:
nine models of one architecture, each registered with its own strategy and parameters, run a
plan of rounds side by side on three workers' own files and two validators. Every round's
aggregate (and a stateful strategy's server state, stored by CID beside it) equals, bit for
bit, what one strategy object kept in memory gives when the same rounds run in-process."""

from __future__ import annotations

import numpy as np
import pytest

from tests.agents.test_own_data_devnet import own_data_network, train_plans, train_round

WORKERS, VALIDATORS, ROUNDS, EPOCHS = 3, 2, 3, 2
STRATEGIES = {
    "fedprox": {"mu": "0.5"},
    "fedavgm": {"eta": "0.8", "momentum": "0.5"},
    "fedadam": {"eta": "0.05"},
    "fedyogi": {"eta": "0.05", "tau": "0.01"},
    "fedmedian": {},
    "trimmed_mean": {"beta": "0.34"},
    "krum": {"f": "0"},
    "multikrum": {"keep": "2"},
    "fedavgm:secure": {"momentum": "0.3"},
}


def _replay(s, fl, sub, data, info, mid, strategy, params):
    """The model's rounds in-process from the same files and seeds, with one strategy object
    kept across them; asserts each round's aggregate and server state equal the chain's."""
    spec = s.spec(sub["architecture_cid"])
    contract = fl.spec_contract(spec)
    mine = {
        w["address"]: fl.load_data(data / f"worker-{i}.csv", "target", contract)
        for i, w in enumerate(info["workers"])
    }
    kept = fl.strategy_for(strategy, params)
    mu = float(kept.client_config().get("proximal_mu", 0.0))
    weights = fl.weights_from_bytes(s.store.get(sub["weights_cid"]))
    rounds = sorted(s.rounds(mid), key=lambda r: r.round_id)
    assert [r.status for r in rounds] == ["finalized"] * ROUNDS, (strategy, rounds[-1].note)
    for rnd in rounds:
        updates = train_round(fl, spec, weights, rnd, mine, EPOCHS, proximal_mu=mu)
        if strategy.endswith(":secure"):
            # masks cancel exactly: any masks reveal the same fixed-point mean
            ids = [u.client_id for u in updates]
            seeds = fl.pairwise_seeds(ids, b"any masks")
            masked = [
                fl.mask_update(u.client_id, u.weights, seeds[u.client_id], u.num_examples)
                for u in updates
            ]
            weights = kept.step(weights, fl.secure_mean(masked))
        else:
            weights = kept.aggregate(weights, updates)
        on_chain = fl.weights_from_bytes(s.store.get(rnd.aggregate_cid))
        for a, b in zip(weights, on_chain, strict=True):
            np.testing.assert_array_equal(a, b, err_msg=f"{strategy} round {rnd.round_id}")
        if kept.STATEFUL:
            assert rnd.state_cid is not None and s.store.get(rnd.state_cid) == kept.state_bytes()
        else:
            assert rnd.state_cid is None
    return rounds


@pytest.mark.chain
def test_every_strategy_on_the_network_equals_it_in_process(tmp_path):
    from decentralml_jupyter import Session, fl

    with own_data_network(tmp_path) as (data, features, dfml, info, url, storage):
        feature_args = [a for f in features for a in ("--feature", f)]
        subs = {}
        for strategy, params in STRATEGIES.items():
            extra = [a for k, v in params.items() for a in ("--strategy-param", f"{k}={v}")]
            subs[strategy] = dfml(
                "model", "submit", str(tmp_path / "diabetes.keras"), "--metric", "mae",
                "--strategy", strategy, *extra, *feature_args,
            )  # fmt: skip
            shown = dfml("model", "show", str(subs[strategy]["model_id"]))
            assert shown["strategy"] == strategy
            for k, v in params.items():
                assert shown["strategy_params"][k] == pytest.approx(float(v))
        # a malformed strategy is refused before anything is stored or sent
        with pytest.raises(Exception, match="out of range"):
            dfml(
                "model", "submit", str(tmp_path / "diabetes.keras"), "--strategy", "fedadam",
                "--strategy-param", "beta_1=1.5",
            )  # fmt: skip
        ids = [str(sub["model_id"]) for sub in subs.values()]
        train_plans(dfml, ids, epochs=EPOCHS, rounds=ROUNDS, deadline=90)
        with Session(url, storage) as s:
            for strategy, params in STRATEGIES.items():
                mid = subs[strategy]["model_id"]
                rounds = _replay(s, fl, subs[strategy], data, info, mid, strategy, params)
                if fl.strategy_for(strategy).STATEFUL:
                    assert s.model(mid).state_cid == rounds[-1].state_cid
                    assert rounds[1].base_state_cid == rounds[0].state_cid
