"""``StateCore``: the state's tables, id allocation and the read-only look-ups shared by
several domains (models, live rounds, stake weights, worker eligibility).

Every handler mixin and the read side derive from it; ``State`` combines them.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from ..accounts import account_id
from ..values import ProtocolParams
from .records import (
    _Attestation,
    _Market,
    _Model,
    _Payout,
    _Proposal,
    _require,
    _Reward,
    _Round,
    _Slash,
    _Submission,
    _Task,
    _Unbonding,
    _Update,
)

_ID_KINDS = (
    "model",
    "task",
    "submission",
    "proposal",
    "payout",
    "unbonding",
    "round",
    "update",
    "attestation",
    "reward",
    "slash",
    "market",
)
_LIVE_ROUND = ("open", "aggregating")


class StateCore:
    """The protocol state's tables. Not thread-safe; one writer (the indexer) at a time."""

    def __init__(self, params: ProtocolParams | None = None):
        self._params: dict[str, int] = dataclasses.asdict(params or ProtocolParams())
        self._last_block = -1
        self._last_hash = ""
        self._next: dict[str, int] = dict.fromkeys(_ID_KINDS, 1)
        self._models: dict[int, _Model] = {}
        self._tasks: dict[int, _Task] = {}
        self._submissions: dict[int, _Submission] = {}
        self._proposals: dict[int, _Proposal] = {}
        self._unbonding: dict[int, _Unbonding] = {}
        self._payouts: dict[int, _Payout] = {}
        self._rounds: dict[int, _Round] = {}
        self._updates: dict[int, _Update] = {}
        self._attestations: dict[int, _Attestation] = {}
        self._rewards: dict[int, _Reward] = {}
        self._slashes: dict[int, _Slash] = {}
        self._markets: dict[int, _Market] = {}
        self._stakes: dict[tuple[str, int], int] = {}  # (account, model) -> active stake
        # (model, pool address, asset key) -> funds the chain moved there for the model
        self._held: dict[tuple[int, str, int], int] = {}
        # every multisig pool a model ever had: address -> {"signatories", "threshold", "models"}
        self._pools: dict[str, dict[str, Any]] = {}
        # value that left a pool outside the protocol's payouts (a dishonest quorum, dust)
        self._losses: list[dict[str, Any]] = []
        # transfers already backing a call: (block, extrinsic, position, src, dst, amount, asset)
        self._consumed: set[tuple[Any, ...]] = set()
        # transfers out of a pool that a settled payout accounted for, in the open extrinsic
        self._debited: set[tuple[Any, ...]] = set()
        self._open_extrinsic: tuple[int, int] | None = None
        # verdict-table parts sent so far in the open extrinsic, per signer (never saved:
        # an extrinsic ends before any snapshot)
        self._table_parts: dict[str, list[tuple[int, bytes]]] = {}
        self._protocol_call_seen = False
        self._errors: list[dict[str, Any]] = []
        self._keys: dict[str, str] = {}  # account -> announced X25519 public key (0x-hex)
        self._delegates: dict[str, str] = {}  # worker -> the host that may submit its updates

    def _take_id(self, kind: str) -> int:
        n = self._next[kind]
        self._next[kind] = n + 1
        return n

    def _model(self, model_id: int) -> _Model:
        m = self._models.get(model_id)
        _require(m is not None, f"unknown model {model_id}")
        return m  # type: ignore[return-value]

    def _live_model(self, model_id: int) -> _Model:
        m = self._model(model_id)
        _require(m.status != "retired", f"model {model_id} is retired")
        return m

    def _live_round(self, model_id: int) -> _Round | None:
        for r in self._rounds.values():
            if r.model_id == model_id and r.status in _LIVE_ROUND:
                return r
        return None

    def _round_updates(self, round_id: int) -> list[_Update]:
        """A round's updates in id order, through an index by round (derived, never saved:
        rebuilt when the updates were loaded otherwise, e.g. from a snapshot), so that a
        round of a thousand submissions costs no scan of every update ever made."""
        index = self.__dict__.get("_update_index")
        if index is None or index[0] != len(self._updates):
            by_round: dict[int, list[int]] = {}
            for uid in sorted(self._updates):
                by_round.setdefault(self._updates[uid].round_id, []).append(uid)
            index = self._update_index = (len(self._updates), by_round)
        return [self._updates[uid] for uid in index[1].get(round_id, ())]

    def _add_update(self, u: _Update) -> None:
        """Record a new update (ids only grow), keeping the index by round current."""
        self._updates[u.id] = u
        index = self.__dict__.get("_update_index")
        if index is not None and index[0] == len(self._updates) - 1:
            index[1].setdefault(u.round_id, []).append(u.id)
            self._update_index = (index[0] + 1, index[1])

    def _weight(self, account: str, target: int | None) -> int:
        if target is not None:
            return self._stakes.get((account, target), 0)
        return sum(
            v
            for (a, m), v in self._stakes.items()
            if a == account and self._models[m].stake_asset is None
        )

    def _total_weight(self, target: int | None) -> int:
        if target is not None:
            return sum(v for (_, m), v in self._stakes.items() if m == target)
        return sum(v for (_, m), v in self._stakes.items() if self._models[m].stake_asset is None)

    def _eligible(
        self, m: _Model, account: str, scores: dict[str, int] | None = None
    ) -> str | None:
        """Why ``account`` may not work on ``m``, or None (``scores``: the model's
        ``_reputation_scores``, when the caller asks for many accounts)."""
        e = m.eligibility
        if e["type"] == "allow_list" and account not in e["accounts"]:
            return f"{account} is not on model {m.id}'s allow-list"
        if e["type"] == "min_stake" and self._stakes.get((account, m.id), 0) < e["amount"]:
            return f"model {m.id} requires a stake of at least {e['amount']} to work on it"
        if e["type"] == "min_reputation":
            have = (self._reputation_scores(m.id) if scores is None else scores).get(account, 0)
            if have < e["score"]:
                return (
                    f"model {m.id} requires a reputation of at least {e['score']} (its accepted "
                    f"updates' contribution scores summed, ppm): {account} has {have}"
                )
        return None

    def _reputation_scores(self, model_id: int) -> dict[str, int]:
        """Each worker's accepted updates' contribution scores on a model, summed."""
        out: dict[str, int] = {}
        for u in self._updates.values():
            if u.status == "accepted" and self._rounds[u.round_id].model_id == model_id:
                out[u.worker] = out.get(u.worker, 0) + (u.contribution or 0)
        return out

    def _round_workers(self, m: _Model) -> list[str]:
        """Eligible clients, in canonical (account id) order: a non-zero active stake on the
        model, not one of its validators (they judge the updates), and passing the model's
        SetEligibleWorkers rule (anyone with stake / allow-list / min_stake / min_reputation)."""
        scores = self._reputation_scores(m.id) if m.eligibility["type"] == "min_reputation" else {}
        out = [
            a
            for (a, mid), v in self._stakes.items()
            if mid == m.id
            and v > 0
            and a not in m.validators
            and self._eligible(m, a, scores) is None
        ]
        return sorted(out, key=account_id)
