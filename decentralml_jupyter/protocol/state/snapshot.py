"""``Snapshots``: the state's canonical serialization. ``state_hash`` (blake2b-256 of it, the
error log left out), ``to_bytes`` (with the error log) and ``from_bytes``, which restores a
snapshot exactly and refuses any other ``FORMAT`` with ``SnapshotError`` (the indexer then
replays from genesis).
"""

from __future__ import annotations

import dataclasses
import json
from hashlib import blake2b
from typing import Any, Self

from ..errors import SnapshotError
from .core import StateCore
from .records import (
    _Attestation,
    _Market,
    _Model,
    _Payout,
    _Proposal,
    _Reward,
    _Round,
    _Slash,
    _Submission,
    _Task,
    _Unbonding,
    _Update,
)

# 8: workers delegate their updates to a host; 7: drt deposits and prediction markets;
# 6: attestations' verdict tables; 5: strategy parameters and server state CIDs;
# 4: attestations carry the model's own metric; 3: rounds record next_round_id; 2: books per
# asset, pools' signatories, losses
FORMAT = 8
_ROUND_RECORDS = (_Round, _Update, _Attestation, _Reward, _Slash)


def _canonical(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


class Snapshots(StateCore):
    """Serializing the state and restoring it."""

    def _dump(self) -> dict[str, Any]:
        def rows(table: dict[int, Any]) -> list[dict[str, Any]]:
            return [dataclasses.asdict(r) for _, r in sorted(table.items())]

        return {
            "format": FORMAT,
            "last_block": self._last_block,
            "last_hash": self._last_hash,
            "params": dict(self._params),
            "next": dict(self._next),
            "models": rows(self._models),
            "tasks": rows(self._tasks),
            "submissions": rows(self._submissions),
            "proposals": rows(self._proposals),
            "unbonding": rows(self._unbonding),
            "payouts": rows(self._payouts),
            "rounds": rows(self._rounds),
            "updates": rows(self._updates),
            "attestations": rows(self._attestations),
            "rewards": rows(self._rewards),
            "slashes": rows(self._slashes),
            "markets": rows(self._markets),
            "stakes": [[a, m, v] for (a, m), v in sorted(self._stakes.items())],
            "held": [[m, p, a, v] for (m, p, a), v in sorted(self._held.items())],
            "pools": {k: v for k, v in sorted(self._pools.items())},
            "losses": list(self._losses),
            "consumed": sorted(list(k) for k in self._consumed),
            "keys": [[a, k] for a, k in sorted(self._keys.items())],
            "delegates": [[a, h] for a, h in sorted(self._delegates.items())],
        }

    def state_hash(self) -> str:
        """blake2b-256 of the canonical serialization of the state (the error log excluded)."""
        return "0x" + blake2b(_canonical(self._dump()), digest_size=32).hexdigest()

    def to_bytes(self) -> bytes:
        """A canonical snapshot, the error log included; ``from_bytes`` restores it exactly."""
        data = self._dump()
        data["errors"] = self._errors
        return _canonical(data)

    @classmethod
    def from_bytes(cls, data: bytes) -> Self:
        try:
            d = json.loads(data)
            if d.get("format") != FORMAT:
                raise SnapshotError(f"unsupported snapshot format {d.get('format')!r}")
            s = cls()
            s._last_block = d["last_block"]
            s._last_hash = d["last_hash"]
            s._params = dict(d["params"])
            s._next.update(d["next"])  # snapshots from before rounds lack their kinds
            for attr, rec in (
                ("_models", _Model),
                ("_tasks", _Task),
                ("_submissions", _Submission),
                ("_proposals", _Proposal),
                ("_unbonding", _Unbonding),
                ("_payouts", _Payout),
                ("_rounds", _Round),
                ("_updates", _Update),
                ("_attestations", _Attestation),
                ("_rewards", _Reward),
                ("_slashes", _Slash),
                ("_markets", _Market),
            ):
                rows = d[attr[1:]] if attr[1:] in d or rec not in _ROUND_RECORDS else []
                setattr(s, attr, {r["id"]: rec(**r) for r in rows})
            s._stakes = {(a, m): v for a, m, v in d["stakes"]}
            s._held = {(m, p, a): v for m, p, a, v in d["held"]}
            s._pools = {k: dict(v) for k, v in d["pools"].items()}
            s._losses = list(d["losses"])
            s._consumed = {tuple(k) for k in d["consumed"]}
            s._keys = {a: k for a, k in d.get("keys", [])}  # snapshots from before keys
            s._delegates = {a: h for a, h in d["delegates"]}
            s._errors = list(d["errors"])
        except SnapshotError:
            raise
        except (ValueError, KeyError, TypeError) as e:
            raise SnapshotError(f"corrupt state snapshot: {e}") from e
        return s
