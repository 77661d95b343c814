"""A tiny simulated chain for protocol tests: numbered blocks, extrinsics and dev accounts.

It plays the indexer's part: it hands each remark to ``State.apply`` with a CallContext and
ticks every block, so tests read like the calls a client would make.
"""

from __future__ import annotations

from hashlib import blake2b

from decentralml_jupyter.protocol import CallContext, Outcome, State, Transfer
from decentralml_jupyter.protocol.accounts import ss58

# Deterministic dev accounts (not real keys: the protocol only needs distinct 32-byte ids).
NAMES = ("alice", "bob", "carol", "dave", "eve", "ferdie")
ACCOUNTS = {n: ss58(blake2b(n.encode(), digest_size=32).digest()) for n in NAMES}
CID_A = "QmArchitecture1111111111111111111111111111111"
CID_W = "QmWeights22222222222222222222222222222222222222"


class Sim:
    """Feeds calls to a State, one extrinsic per call, and ticks blocks on demand."""

    def __init__(self, state: State | None = None):
        self.state = state or State()
        self.block = self.state.last_block + 1
        self.extrinsic = 0
        self.log: list[tuple] = []  # what was fed, for replaying into another State

    def call(
        self,
        who: str,
        remark: bytes,
        transfers: tuple[Transfer, ...] = (),
        batch_index: int = 0,
    ) -> Outcome:
        signer = ACCOUNTS.get(who, who)
        ctx = CallContext(
            self.block, f"0x{self.block:064x}", self.extrinsic, batch_index, signer, transfers
        )
        self.extrinsic += 1
        self.log.append(("apply", ctx, remark))
        out = self.state.apply(ctx, remark)
        # as the indexer does: value that reached a pool and backs no accepted call is owed back
        self.state.close_extrinsic(ctx.block_number, ctx.extrinsic_index, ctx.transfers)
        return out

    def pay(self, who: str, dest: str, amount: int, asset: int | None = None) -> Transfer:
        return Transfer(ACCOUNTS.get(who, who), dest, amount, asset)

    def tick(self, blocks: int = 1) -> None:
        for _ in range(blocks):
            self.log.append(("tick", self.block))
            self.state.tick(self.block, f"0x{self.block:064x}")
            self.block += 1
            self.extrinsic = 0

    def settle_all(self) -> list[Outcome]:
        """Execute every pending payout as its pool would (transfer + settle remark)."""
        from decentralml_jupyter.protocol import encoders

        out = []
        while ready := self.state.pending_payouts(ready_only=True):
            for p in ready:
                t = Transfer(p.pool, p.dest, p.amount, p.asset_id)
                out.append(self.call(p.pool, encoders.settle_payout(p.id), (t,)))
        return out


def replay(log: list[tuple], state: State | None = None) -> State:
    state = state or State()
    for entry in log:
        if entry[0] == "apply":
            ctx = entry[1]
            state.apply(ctx, entry[2])
            state.close_extrinsic(ctx.block_number, ctx.extrinsic_index, ctx.transfers)
        else:
            state.tick(entry[1], f"0x{entry[1]:064x}")
    return state
