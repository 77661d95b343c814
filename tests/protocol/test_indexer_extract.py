"""The indexer's reading of a block, directly: which protocol calls executed and which
transfers back them, from events only (call trees may hold calls that never ran)."""

from __future__ import annotations

from hashlib import blake2b
from types import SimpleNamespace

from decentralml_jupyter.protocol import State, encoders
from decentralml_jupyter.protocol.accounts import ss58
from decentralml_jupyter.protocol.indexer import extract_values, fold_block, needs_extrinsics

BOB, EVE, POOL, DAVE = (ss58(blake2b(n, digest_size=32).digest()) for n in (b"b", b"e", b"p", b"d"))


def h(raw: bytes) -> str:
    return "0x" + blake2b(raw, digest_size=32).hexdigest()


def call(module: str, function: str, **args) -> dict:
    return {
        "call_module": module,
        "call_function": function,
        "call_args": [{"name": k, "value": v} for k, v in args.items()],
    }


def remark(raw: bytes) -> dict:
    return call("System", "remark_with_event", remark="0x" + raw.hex())


def transfer(dest: str, amount: int) -> dict:
    return call("Balances", "transfer_keep_alive", dest={"Id": dest}, value=amount)


def ext(tree: dict) -> SimpleNamespace:
    return SimpleNamespace(value={"call": tree})


def ev(module: str, event: str, idx: int | None = 0, **attributes) -> dict:
    return {"module": module, "event": event, "attributes": attributes, "extrinsic_index": idx}


def remarked(sender: str, raw: bytes, idx: int = 0) -> dict:
    return ev("System", "Remarked", idx, sender=sender, hash=h(raw))


def moved(src: str, dst: str, amount: int, idx: int = 0) -> dict:
    return ev("Balances", "Transfer", idx, **{"from": src, "to": dst, "amount": amount})


STAKE = encoders.stake(1, 40)


def test_a_remark_counts_once_per_event_and_takes_transfers_from_events():
    tree = call("Utility", "batch_all", calls=[transfer(POOL, 40), remark(STAKE)])
    events = [moved(BOB, POOL, 40), remarked(BOB, STAKE)]
    (x,) = extract_values([ext(tree)], events, 5, "0x05")
    ((ctx, raw),) = x.calls
    assert raw == STAKE and ctx.signer == BOB and ctx.batch_index == 1
    assert [(t.source, t.dest, t.amount) for t in ctx.transfers] == [(BOB, POOL, 40)]
    assert x.transfers == ctx.transfers


def test_an_unexecuted_multisig_copy_lends_no_transfer():
    # batch_all([as_multi(first approval: batch_all([transfer, R])), R]): only the bare R ran
    inner = call("Utility", "batch_all", calls=[transfer(POOL, 40), remark(STAKE)])
    tree = call(
        "Utility",
        "batch_all",
        calls=[call("Multisig", "as_multi", threshold=2, call=inner), remark(STAKE)],
    )
    events = [ev("Multisig", "NewMultisig"), remarked(BOB, STAKE)]
    (x,) = extract_values([ext(tree)], events, 5, "0x05")
    ((ctx, raw),) = x.calls
    assert raw == STAKE and ctx.transfers == ()


def test_duplicated_remarks_count_as_often_as_they_executed():
    tree = call("Utility", "batch", calls=[remark(STAKE), remark(STAKE), remark(STAKE)])
    # the third failed (its event rolled back)
    events = [remarked(BOB, STAKE), remarked(BOB, STAKE)]
    (x,) = extract_values([ext(tree)], events, 5, "0x05")
    assert [c.batch_index for c, _ in x.calls] == [0, 1]


def test_a_proxied_remark_has_its_principal_as_signer_and_sees_the_proxys_transfer():
    tree = call(
        "Utility",
        "batch_all",
        calls=[transfer(POOL, 5), call("Proxy", "proxy", real=EVE, call=remark(STAKE))],
    )
    events = [moved(DAVE, POOL, 5), remarked(EVE, STAKE)]
    (x,) = extract_values([ext(tree)], events, 5, "0x05")
    ((ctx, _),) = x.calls
    assert ctx.signer == EVE and [t.source for t in ctx.transfers] == [DAVE]


def test_self_transfers_non_protocol_remarks_and_losses():
    other = b"hello"
    tree = call("Utility", "batch", calls=[remark(other), transfer(BOB, 1)])
    events = [
        remarked(BOB, other),
        moved(BOB, BOB, 1),
        ev("Balances", "DustLost", 0, account=POOL, amount=3),
        ev("Assets", "Burned", None, asset_id=7, owner=POOL, balance=2),
    ]
    values = extract_values([ext(tree)], events, 5, "0x05")
    assert [(x.index, x.calls, x.transfers) for x in values] == [(-1, (), ()), (0, (), ())]
    assert values[0].losses == ((POOL, 2, 7),) and values[1].losses == ((POOL, 3, None),)


def test_blocks_without_remarks_need_no_extrinsics_and_still_move_value():
    events = [moved(BOB, POOL, 9, idx=2)]
    assert not needs_extrinsics(events)
    (x,) = extract_values(None, events, 5, "0x05")
    assert x.index == 2 and x.calls == () and x.transfers[0].amount == 9


def test_folding_a_block_refunds_what_a_rejected_call_moved():
    state = State()
    reg = encoders.register_model(
        "m",
        "QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG",
        "QmT78zSuBmuS4z925WZfrqQ1qHaJ56DQaTfyMUF7F8ff5o",
        validators=[EVE, DAVE],
    )
    tree = remark(reg)
    fold_block(state, extract_values([ext(tree)], [remarked(BOB, reg)], 1, "0x01"), 1, "0x01")
    pool = state.model(1).pool
    # a stake of 40 with a transfer of 41: refused, and the 41 is owed back
    tree = call("Utility", "batch_all", calls=[transfer(pool, 41), remark(STAKE)])
    events = [moved(BOB, pool, 41), remarked(BOB, STAKE)]
    fold_block(state, extract_values([ext(tree)], events, 2, "0x02"), 2, "0x02")
    assert state.stakes() == []
    (refund,) = state.pending_payouts()
    assert (refund.reason, refund.dest, refund.amount, refund.pool) == ("refund", BOB, 41, pool)
    assert state.holdings() == {(pool, None): 41}


class _FlakyChain:
    """The few calls the indexer makes, answering as a chain would, or failing as a dead one."""

    url = "ws://127.0.0.1:1"

    def __init__(self, hashes: dict[int, str], head: int):
        self.hashes, self.head, self.down = hashes, head, False

    def block_hash(self, number: int) -> str | None:
        if self.down:
            raise BrokenPipeError("the chain went away")
        return self.hashes.get(number)

    def finalized_number(self) -> int:
        return self.head

    def events(self, block_hash: str) -> list:
        return []


def test_an_index_is_dropped_only_on_proof_of_another_history(tmp_path):
    import pytest

    from decentralml_jupyter.errors import ChainNotReachable
    from decentralml_jupyter.protocol.indexer import Indexer

    chain = _FlakyChain({1: "0xaa"}, head=1)
    idx = Indexer(chain, tmp_path / "i.sqlite")
    idx.sync()
    assert (idx.block_number, idx.block_hash) == (1, "0xaa")
    chain.down = True  # an RPC error is no proof: the index stays, the caller retries
    with pytest.raises(ChainNotReachable, match="cannot check indexed block 1") as err:
        idx.sync()
    assert "index is kept" in err.value.hint
    idx.close()
    again = Indexer(chain, tmp_path / "i.sqlite")
    assert (again.block_number, again.block_hash) == (1, "0xaa")
    chain.down = False
    chain.hashes[1] = "0xbb"  # the chain answers: its block 1 is another block
    again.sync()
    assert (again.block_number, again.block_hash) == (1, "0xbb")  # replayed from genesis
    chain.hashes, chain.head = {}, 0  # a restarted chain that has no block 1 yet
    again.sync()
    assert again.block_number == 0
    again.close()


def test_a_block_whose_events_and_body_do_not_fit_is_read_again_alone(tmp_path):
    """A busy chain answered a chunk with a block's remark events naming an extrinsic its
    body lacked: the indexer reads that block again by itself, and if the answers still do
    not fit it stops before the block with a ChainError (read again at the next sync)."""
    import pytest

    from decentralml_jupyter.errors import ChainError
    from decentralml_jupyter.protocol.indexer import Indexer

    remarked = {
        "module": "System", "event": "Remarked", "extrinsic_index": 3,
        "attributes": {"sender": "5GrwvaEF5zXb26Fz9rcQpDWS57CtERHpNehXCPcNoHGKutQY",
                       "hash": "0x" + "00" * 32},
    }  # fmt: skip

    class Chain:
        url = "ws://127.0.0.1:1"

        def __init__(self, body_ok: bool):
            self.body_ok, self.alone = body_ok, []

        def finalized_number(self):
            return 2

        def block_hash(self, n):
            return f"0x{n:064x}" if 0 <= n <= 2 else None

        def read_blocks(self, hashes, parent_hash=None, want_extrinsics=None):
            return [([remarked], [object()]) if h.endswith("2") else ([], None) for h in hashes]

        def events(self, h):
            self.alone.append(int(h, 16))
            return [remarked]

        def extrinsics(self, h):
            return [{"call": {}}] * (4 if self.body_ok else 1)

    ok = Chain(body_ok=True)
    idx = Indexer(ok, tmp_path / "a.sqlite")
    blocks = idx._read_chunk(1, 2)  # block 2's chunk answer does not fit: read again alone
    assert ok.alone == [2] and len(blocks[1][2]) == 4 and blocks[0][2] is None
    bad = Chain(body_ok=False)
    idx = Indexer(bad, tmp_path / "b.sqlite")
    with pytest.raises(ChainError, match="name extrinsics its body lacks"):
        idx.sync()
    assert idx.block_number == 0  # nothing folded from the chunk


def test_an_agents_index_is_saved_every_so_often_and_at_close(tmp_path):
    """``save_every``: a sync that folds blocks snapshots the state at most that often (an
    agent's index is the whole state: saving it on every block cost every agent a growing
    share of each block); closing saves what is unsaved, and a reopened index resumes there."""
    from decentralml_jupyter.protocol.indexer import Indexer

    chain = _FlakyChain({1: "0xaa", 2: "0xab"}, head=1)
    idx = Indexer(chain, tmp_path / "i.sqlite", save_every=3600)
    idx.sync()  # the first fold is saved
    chain.head = 2
    idx.sync()  # within the hour: not saved yet
    assert (idx.block_number, idx.block_hash) == (2, "0xab")
    assert Indexer(chain, tmp_path / "i.sqlite").block_number == 1
    idx.close()
    assert Indexer(chain, tmp_path / "i.sqlite").block_number == 2
