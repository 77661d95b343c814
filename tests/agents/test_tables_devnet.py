"""Verdict tables on the real dev network: validators told to list nothing inline
(DFML_INLINE_MAX=0) send every verdict as a table, in table_part remarks before the
attestation and in storage; rounds finalize from them and pay their contributors."""

from __future__ import annotations

import pytest

from tests.agents.test_own_data_devnet import WORKERS, own_data_network, train_plans

UNIT = 10**12


@pytest.mark.chain
def test_rounds_finalize_on_verdict_tables(tmp_path, monkeypatch):
    from decentralml_jupyter import Session
    from decentralml_jupyter.protocol import calls as C
    from decentralml_jupyter.storage import KuboStore
    from decentralml_jupyter.storage.unixfs import compute_cid

    monkeypatch.setenv("DFML_INLINE_MAX", "0")  # the validators' processes inherit it
    with own_data_network(tmp_path) as (data, features, dfml, info, url, storage):
        feature_args = [a for f in features for a in ("--feature", f)]
        sub = dfml(
            "model", "submit", str(tmp_path / "diabetes.keras"), "--metric", "mae", *feature_args
        )
        mid = str(sub["model_id"])
        train_plans(dfml, [mid], epochs=2, rounds=2, extra=("--reward", str(10 * UNIT)))
        store = KuboStore(storage)
        with Session(url, storage) as s:
            rounds = s.rounds(int(mid))
            assert [r.status for r in rounds] == ["finalized", "finalized"]
            for rnd in rounds:
                assert rnd.attestations and all(a.table_cid for a in rnd.attestations)
                for att in rnd.attestations:
                    raw = store.get(att.table_cid)
                    assert compute_cid(raw) == att.table_cid
                    table = C.VerdictTable.decode_fields(C.Reader(raw))
                    assert {c.account for c in table.accepted} == set(rnd.submitted)
                    assert sum(c.score for c in table.accepted) == C.PERMILL
                    # the state's record of the verdict is the table's
                    assert sorted(x[0] for x in att.accepted) == sorted(rnd.submitted)
                assert set(rnd.rewards) == set(rnd.submitted) and len(rnd.submitted) == WORKERS
            # every part went on chain before its attestation, in its extrinsic: the chain's
            # own record of the first attestation's block says so
            first = rounds[0].attestations[0]
            found = []
            for index in range(32):
                try:
                    x = dfml("decode", f"{first.block_number}:{index}")
                except Exception:  # noqa: BLE001 - an extrinsic with no remark, or past the end
                    continue
                mine = [c["call"] for c in x["calls"] if c["signer"] == first.validator]
                if any(name.startswith("attest") for name in mine):
                    found = mine  # (a payout it approved may have settled after, by the pool)
                    break
            assert found and found[-1].startswith("attest")
            assert len(found) >= 2 and set(found[:-1]) == {"table_part"}
