"""A tiny simulated chain for protocol tests: numbered blocks, extrinsics and dev accounts.

It plays the indexer's part: it hands each remark to ``State.apply`` with a CallContext and
ticks every block, so tests read like the calls a client would make.
"""

from __future__ import annotations

import re
from hashlib import blake2b

from decentralml_jupyter.protocol import (
    ApproveModel,
    CallContext,
    Outcome,
    State,
    Transfer,
    encoders,
)
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

    def batch(self, who: str, remarks: list[bytes]) -> list[Outcome]:
        """Several remarks of one signer in one extrinsic, in order (a batch's calls)."""
        signer = ACCOUNTS.get(who, who)
        outs = []
        for i, remark in enumerate(remarks):
            ctx = CallContext(self.block, f"0x{self.block:064x}", self.extrinsic, i, signer)
            self.log.append(("apply", ctx, remark))
            outs.append(self.state.apply(ctx, remark))
        self.state.close_extrinsic(self.block, self.extrinsic)
        self.extrinsic += 1
        return outs

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
    """Feed ``log`` to ``state`` as the indexer would: each extrinsic closed after its last
    call."""
    state = state or State()

    def where(entry):
        return (entry[1].block_number, entry[1].extrinsic_index) if entry[0] == "apply" else None

    for i, entry in enumerate(log):
        if entry[0] == "apply":
            ctx = entry[1]
            state.apply(ctx, entry[2])
            if i + 1 == len(log) or where(log[i + 1]) != where(entry):
                state.close_extrinsic(ctx.block_number, ctx.extrinsic_index, ctx.transfers)
        else:
            state.tick(entry[1], f"0x{entry[1]:064x}")
    return state


# -- helpers shared by the protocol tests --------------------------------------------------
# validators that never stake, work or create tasks in these tests: a model takes funds only
# with at least two validators (its pool is then their multisig, which nobody holds alone)
V1, V2 = (ss58(blake2b(f"validator{i}".encode(), digest_size=32).digest()) for i in (1, 2))
VALS = (V1, V2)
CUSTODY = r"model \d+ has [01] validator\(s\): its pool would be one person's account"


def rejected(sim: Sim, who: str, remark: bytes, transfers=(), match: str = "") -> str:
    """Apply a call that must fail: the call changes nothing and is logged with its reason.

    What the chain moved in its extrinsic is still accounted for: each transfer into a known
    multisig pool becomes a ``refund`` payout to its sender, each transfer out of one is a
    loss debited from the books; without such transfers the state hash is unchanged.
    """
    transfers = tuple(transfers)
    probe = State.from_bytes(sim.state.to_bytes())
    before = sim.state.state_hash()
    n_errors, n_payouts = len(sim.state.errors()), len(sim.state.payouts())
    n_losses = len(sim.state.losses())
    out = sim.call(who, remark, transfers)
    assert not out.ok, out
    assert re.search(match, out.reason), out.reason
    errors = sim.state.errors()
    assert len(errors) == n_errors + 1 and errors[-1].reason == out.reason
    # the call itself changes nothing: applied alone to the state before, no hash moves
    _, ctx, raw = sim.log[-1]
    assert probe.apply(ctx, raw).reason == out.reason
    assert probe.state_hash() == before
    moved = [t for t in transfers if t.source != t.dest]
    into = [t for t in moved if sim.state.pool_signers(t.dest) is not None]
    out_of = [t for t in moved if sim.state.pool_signers(t.source) is not None]
    new = sim.state.payouts()[n_payouts:]
    assert [(p.pool, p.dest, p.amount, p.asset_id, p.reason, p.status) for p in new] == [
        (t.dest, t.source, t.amount, t.asset_id, "refund", "pending") for t in into
    ]
    lost = sim.state.losses()[n_losses:]
    assert [(x["pool"], x["amount"], x["asset"]) for x in lost] == [
        (t.source, t.amount, t.asset_id) for t in out_of
    ]
    if not into and not out_of:
        assert sim.state.state_hash() == before
    return out.reason


def ok(sim: Sim, who: str, remark: bytes, transfers=()):
    out = sim.call(who, remark, tuple(transfers))
    assert out.ok, out.reason
    return out


def register(sim: Sim, owner: str = "alice", **kw) -> int:
    kw.setdefault("validators", VALS)
    out = ok(sim, owner, encoders.register_model("digits", CID_A, CID_W, **kw))
    assert out.entity == "model"
    return out.entity_id


def stake(sim: Sim, who: str, model_id: int, amount: int, asset=None):
    pool = sim.state.model(model_id).pool
    return ok(
        sim, who, encoders.stake(model_id, amount, asset), [sim.pay(who, pool, amount, asset)]
    )


def pass_proposal(sim: Sim, target, action, voters=("alice",), blocks: int = 10) -> int:
    pid = ok(sim, voters[0], encoders.propose(target, action, blocks)).entity_id
    for v in voters:
        ok(sim, v, encoders.vote(pid, True))
    sim.tick(blocks + 1)
    assert sim.state.proposal(pid).status == "passed", sim.state.proposal(pid)
    return pid


def approved_model(sim: Sim, **kw) -> int:
    mid = register(sim, **kw)
    stake(sim, "alice", mid, 1000)
    pass_proposal(sim, mid, ApproveModel())
    return mid


def check_books(state: State) -> None:
    for p in state.pools():
        assert p.held == p.obligations, p
