"""``StakeHandlers``: staking on a model and unstaking from it; an unstaked amount unbonds for
``unstake_lock_blocks`` and is then owed back by the pool (``_release_unbonded``, at a tick).
"""

from __future__ import annotations

from .. import calls as C
from ..values import CallContext
from .models import ModelHandlers
from .records import _asset_name, _require, _Unbonding


class StakeHandlers(ModelHandlers):
    """Stake calls and unbonding."""

    def _stake(self, ctx: CallContext, c: C.Stake) -> None:
        m = self._live_model(c.model_id)
        _require(c.amount > 0, "stake amount must be positive")
        _require(
            c.asset_id == m.stake_asset,
            f"model {m.id} takes stakes in {_asset_name(m.stake_asset)}, "
            f"not {_asset_name(c.asset_id)}",
        )
        self._custodial(m)
        key = self._find_transfer(ctx, ctx.signer, m.pool, c.amount, c.asset_id)
        self._consumed.add(key)
        skey = (ctx.signer, m.id)
        self._stakes[skey] = self._stakes.get(skey, 0) + c.amount
        self._credit(m.id, m.pool, c.amount)

    def _unstake(self, ctx: CallContext, c: C.Unstake) -> tuple[str, int]:
        m = self._model(c.model_id)
        _require(c.amount > 0, "unstake amount must be positive")
        staked = self._stakes.get((ctx.signer, m.id), 0)
        _require(c.amount <= staked, f"cannot unstake {c.amount}: {staked} staked on model {m.id}")
        # a selected worker's stake backs its update until the round ends (it may be slashed)
        live = self._live_round(m.id)
        _require(
            live is None or ctx.signer not in live.selected,
            f"{ctx.signer} is a client of round {live.id if live else 0} of model {m.id}: "
            "its stake is bonded until the round ends",
        )
        if staked == c.amount:
            del self._stakes[(ctx.signer, m.id)]
        else:
            self._stakes[(ctx.signer, m.id)] = staked - c.amount
        uid = self._take_id("unbonding")
        unlock = ctx.block_number + self._params["unstake_lock_blocks"]
        self._unbonding[uid] = _Unbonding(uid, ctx.signer, m.id, c.amount, m.stake_asset, unlock)
        return ("unbonding", uid)

    def _release_unbonded(self, block: int) -> None:
        """Owe every stake whose lock ended by ``block`` back to its staker (in id order)."""
        for u in sorted(self._unbonding.values(), key=lambda u: u.id):
            if u.unlock_at <= block:
                del self._unbonding[u.id]
                self._new_payout(u.model_id, u.account, u.amount, "unstake", block)
