"""``Books``: what each pool holds for each model, payouts out of pools, and value the chain
moved outside the protocol's calls.

``_credit`` keeps the books per (model, pool, asset); ``_new_payout`` owes value out of a
pool; ``settle_payout`` marks a payout paid when its pool's transfer lands; ``_sweep``
migrates what earlier pools of a model hold to its current pool; ``close_extrinsic`` turns
unused transfers into a pool into ``refund`` payouts and value that left a pool otherwise into
``losses()``. Also the transfer matching every funded call uses (``_find_transfer``).
"""

from __future__ import annotations

from typing import Any

from .. import calls as C
from ..errors import OrderingError
from ..values import CallContext, Transfer
from .core import StateCore
from .records import _akey, _asset, _asset_name, _Payout, _Reject, _require


def _transfer_key(block: int, extrinsic: int, position: int, t: Transfer) -> tuple[Any, ...]:
    return (block, extrinsic, position, t.source, t.dest, t.amount, _akey(t.asset_id))


class Books(StateCore):
    """The books of the pools and the payouts out of them."""

    def close_extrinsic(
        self,
        block_number: int,
        extrinsic_index: int,
        transfers: tuple[Transfer, ...] = (),
        losses: tuple[tuple[str, int, int | None], ...] = (),
    ) -> None:
        """Account for what the chain moved in one extrinsic beyond the calls it carried.

        ``transfers`` are the extrinsic's executed transfers (from its events, in order: the
        same tuple every call of the extrinsic was given), ``losses`` what left an account
        otherwise (dust, burns) as (account, amount, asset). Call after the extrinsic's last
        ``apply`` (or alone, for an extrinsic without protocol calls). Value that reached a
        pool in an extrinsic with protocol calls and backs no accepted call is owed back to
        its sender (a ``refund`` payout); value that left a pool other than by a settled
        payout is debited from the books and recorded in ``losses()``, so the books never
        count more than the chain holds.
        """
        if block_number <= self._last_block:
            raise OrderingError(f"extrinsic in block {block_number} after it was ticked")
        same = self._open_extrinsic == (block_number, extrinsic_index)
        protocol = same and self._protocol_call_seen
        debited = self._debited if same else set()
        for i, t in enumerate(transfers):
            if t.source == t.dest:
                continue
            key = _transfer_key(block_number, extrinsic_index, i, t)
            if t.source in self._pools and key not in debited:
                self._lose(t.source, t.amount, t.asset_id, block_number, f"transfer to {t.dest}")
            if t.dest in self._pools and protocol and key not in self._consumed:
                self._refund(t, block_number)
        for account, amount, asset in losses:
            if account in self._pools and amount > 0:
                self._lose(account, amount, asset, block_number, "removed by the chain")
        self._open_extrinsic, self._protocol_call_seen = None, False
        self._debited.clear()

    def holdings(self) -> dict[tuple[str, int | None], int]:
        """What the books count in each multisig pool, by (pool, asset), over all its models:
        never more than the chain's balance of that pool in that asset."""
        out: dict[tuple[str, int | None], int] = {}
        for (_, pool, a), v in self._held.items():
            out[(pool, _asset(a))] = out.get((pool, _asset(a)), 0) + v
        return dict(sorted(out.items(), key=lambda kv: (kv[0][0], _akey(kv[0][1]))))

    def losses(self) -> list[dict[str, Any]]:
        """Value that left a pool other than through a settled payout (a transfer that a
        dishonest quorum of validators signed, dust the chain removed), debited from the books."""
        return [dict(x) for x in self._losses]

    def _lose(self, pool: str, amount: int, asset: int | None, block: int, what: str) -> None:
        """Debit value the chain took out of ``pool`` outside the protocol's payouts, from the
        models booked there in id order: what the books count never exceeds the chain."""
        left = amount
        for key in sorted(k for k in self._held if k[1] == pool and k[2] == _akey(asset)):
            take = min(left, self._held[key])
            self._credit(key[0], pool, -take, asset)
            left -= take
        self._losses.append(
            {"block_number": block, "pool": pool, "amount": amount, "asset": asset, "note": what}
        )
        # a migration out of this pool can no longer be paid in full: derive it again from
        # what the books still hold there, so the rest of the pool does not stay stuck
        stale = [
            p
            for p in self._payouts.values()
            if p.status == "pending" and p.reason == "migrate" and p.pool == pool
        ]
        for p in stale:
            p.status = "void"
        for model_id in sorted({p.model_id for p in stale}):
            self._sweep(model_id, block)

    def _refund(self, t: Transfer, block: int) -> None:
        """Owe ``t`` back to its sender from the pool it paid into."""
        info = self._pools[t.dest]
        current = [m.id for _, m in sorted(self._models.items()) if m.pool == t.dest]
        same_asset = [i for i in current if self._models[i].stake_asset == t.asset_id]
        model_id = (same_asset or current or sorted(info["models"]))[0]
        self._credit(model_id, t.dest, t.amount, t.asset_id)
        self._new_payout(
            model_id, t.source, t.amount, "refund", block, pool=t.dest, asset=t.asset_id
        )

    def _find_transfer(
        self, ctx: CallContext, source: str, dest: str, amount: int, asset: int | None
    ) -> tuple[Any, ...]:
        """The unused transfer in ``ctx`` backing a call, or a rejection saying what is wrong."""
        near = []
        for i, t in enumerate(ctx.transfers):
            key = _transfer_key(ctx.block_number, ctx.extrinsic_index, i, t)
            if key in self._consumed or t.source == t.dest:  # a self-transfer moves nothing
                continue
            if (t.source, t.dest, t.amount, t.asset_id) == (source, dest, amount, asset):
                return key
            if t.source == source:
                near.append(f"{t.amount} {_asset_name(t.asset_id)} to {t.dest}")
        what = f"{amount} {_asset_name(asset)} from {source} to {dest}"
        seen = f" (found: {'; '.join(near)})" if near else ""
        raise _Reject(f"no unused transfer of {what} in the same batch{seen}")

    def _credit(self, model_id: int, pool: str, amount: int, asset: int | None = ...) -> None:
        """Add ``amount`` (negative: take) to the books of ``model_id`` in ``pool``; the
        asset defaults to the model's stake asset."""
        if asset is ...:
            asset = self._models[model_id].stake_asset
        key = (model_id, pool, _akey(asset))  # type: ignore[arg-type]
        value = self._held.get(key, 0) + amount
        if value:
            self._held[key] = value
        else:  # absent and zero must serialize the same
            self._held.pop(key, None)

    def _new_payout(
        self,
        model_id: int,
        dest: str,
        amount: int,
        reason: str,
        block: int,
        pool: str = "",
        asset: int | None = ...,  # type: ignore[assignment]
    ) -> int | None:
        """Owe ``amount`` to ``dest`` (from the model's current pool and in its stake asset
        unless given); nothing for a non-positive amount."""
        if amount <= 0:
            return None
        m = self._models[model_id]
        pid = self._take_id("payout")
        self._payouts[pid] = _Payout(
            pid,
            model_id,
            pool or m.pool,
            dest,
            amount,
            m.stake_asset if asset is ... else asset,
            reason,
            block,
            "pending",
            None,
        )
        return pid

    def _sweep(self, model_id: int, block: int) -> None:
        """Move what earlier pools of a model hold, beyond their pending payouts, to its pool."""
        current = self._models[model_id].pool
        owed: dict[tuple[str, int], int] = {}
        for p in self._payouts.values():
            if p.model_id == model_id and p.status == "pending":
                k = (p.pool, _akey(p.asset))
                owed[k] = owed.get(k, 0) + p.amount
        for (mid, pool, a), held in sorted(self._held.items()):
            if mid == model_id and pool != current:
                self._new_payout(
                    model_id, current, held - owed.get((pool, a), 0), "migrate", block, pool,
                    _asset(a),
                )  # fmt: skip

    def _settle_payout(self, ctx: CallContext, c: C.SettlePayout) -> None:
        p = self._payouts.get(c.payout_id)
        _require(p is not None, f"unknown payout {c.payout_id}")
        assert p is not None
        _require(p.status == "pending", f"payout {p.id} is already {p.status}")
        _require(ctx.signer == p.pool, f"payout {p.id} can only be settled by its pool {p.pool}")
        # a new pool may owe payouts before the migration funding it has landed
        have = self._held.get((p.model_id, p.pool, _akey(p.asset)), 0)
        _require(
            have >= p.amount,
            f"pool {p.pool} holds {have} for model {p.model_id}, payout {p.id} needs {p.amount}: "
            "settle the migration payout into it first",
        )
        key = self._find_transfer(ctx, p.pool, p.dest, p.amount, p.asset)
        self._consumed.add(key)
        self._debited.add(key)
        p.status = "paid"
        p.paid_block = ctx.block_number
        self._credit(p.model_id, p.pool, -p.amount, p.asset)
        if p.reason == "migrate":
            self._credit(p.model_id, p.dest, p.amount, p.asset)
            # the pool may have changed again while this migration was in flight
            self._sweep(p.model_id, ctx.block_number)
