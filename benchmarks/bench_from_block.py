"""The indexer catching up a chain with a history from `--from-block N`, against fetching the
same blocks' events raw with substrate-interface (`get_block_hash` + `get_events` per block).

Starts its own dev chain on a free port (instant blocks) in a temporary DFML_HOME, builds
``--history`` blocks with a protocol call among them (before the protocol's first block N),
then ``--blocks`` blocks from N with a protocol call at a known block, and prints:

- blocks per second of a fresh indexer catching up from N (best of ``--runs``), of the same
  with every block's events decoded afresh (no two blocks of an idle dev chain differ, so the
  indexer decodes them once; a busy chain's blocks all differ), and of the block-by-block
  reading the indexer did before (one request per hash, events, runtime check);
- the raw rate of `get_block_hash` + `get_events` for the same blocks, and the ratios;
- the requests the catch-up made, and the lowest block number it asked about (none below N),
  and that the call before N was not applied while the one after it was.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from decentralml_jupyter import procs

CID = "QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG"


def _build(chain, blocks: int, what: str) -> int:
    sys.stderr.write(f"building {blocks} blocks {what}")
    left = blocks
    while left > 0:
        step = min(left, 20)
        chain.new_blocks(step)
        left -= step
        sys.stderr.write(".")
        sys.stderr.flush()
    sys.stderr.write("\n")
    return chain.finalized_number()


class _NoMemo(dict):
    """An events memo that keeps nothing: every block's events are decoded afresh."""

    def __setitem__(self, key, value) -> None:
        pass


class _BlockByBlock:
    """A chain with only the per-block calls: the indexer's reading before chunks."""

    def __init__(self, chain):
        self.chain, self.url = chain, chain.url

    def block_hash(self, n):
        return self.chain.block_hash(n)

    def events(self, h):
        return self.chain.events(h)

    def extrinsics(self, h):
        return self.chain.extrinsics(h)

    def finalized_number(self):
        return self.chain.finalized_number()


def _catch_up(url: str, first: int, *, memo: bool = True, chunked: bool = True, capture=None):
    """(seconds, indexer) of a fresh in-memory indexer's sync from ``first`` on a new
    connection."""
    from decentralml_jupyter.chain import Chain
    from decentralml_jupyter.protocol.indexer import Indexer

    chain = Chain(url)
    if not memo:
        chain._decoded_events = _NoMemo()
    sent = chain.record_requests() if capture is not None else []
    source = chain if chunked else _BlockByBlock(chain)
    idx = Indexer(source, None, from_block=first)
    start = time.perf_counter()
    idx.sync()
    took = time.perf_counter() - start
    if capture is not None:
        capture.extend(sent)  # every request the catch-up sent
    return took, idx, chain


def main(history: int, blocks: int, runs: int) -> None:
    from substrateinterface import SubstrateInterface

    from decentralml_jupyter.chain import Chain, devchain
    from decentralml_jupyter.protocol.client import ProtocolClient
    from decentralml_jupyter.protocol.indexer import Indexer

    port = procs.free_port()
    url = f"ws://127.0.0.1:{port}"
    devchain.up(port=port, accounts=4, block_mode="instant")
    try:
        chain = Chain(url)
        writer = ProtocolClient(chain, Indexer(chain, None, from_block=1))
        _build(chain, history, "of history before the protocol")
        early = writer.register_model("//Alice", "before-N", CID, CID).receipt.block_number
        first = early + 1  # N: the protocol's first block
        half = blocks // 2
        _build(chain, half, f"from N={first}")
        late = writer.register_model("//Bob", "from-N-on", CID, CID).receipt.block_number
        head = _build(chain, blocks - half - 1, "more")
        count = head - first + 1
        writer.close()

        # the raw rate: substrate-interface, one block at a time, the same blocks
        raw = SubstrateInterface(url=url)
        raw.get_events(raw.get_block_hash(head))  # warm: metadata decoded once
        raw_times = []
        for _ in range(runs):
            start = time.perf_counter()
            for n in range(first, head + 1):
                raw.get_events(raw.get_block_hash(n))
            raw_times.append(time.perf_counter() - start)
        raw.close()
        raw_rate = count / min(raw_times)

        sent: list[dict] = []
        took, idx, conn = _catch_up(url, first, capture=sent)
        names = [m.name for m in idx.state.models()]
        assert names == ["from-N-on"], names  # the call at `late` applied, the one at `early` not
        assert idx.block_number == head

        def best(**kw) -> float:
            times = []
            for _ in range(runs):
                seconds, other, other_chain = _catch_up(url, first, **kw)
                assert other.state.state_hash() == idx.state.state_hash()  # the same state
                other_chain.close()
                times.append(seconds)
            return min(times)

        fast = min(took, best())
        cold = best(memo=False)
        old = best(chunked=False)

        lowest = None
        early_hashes = set(conn.block_hashes(1, first - 1))
        for request in sent:
            params = json.dumps(request["params"])
            assert not any(h in params for h in early_hashes), request
            if request["method"] == "chain_getBlockHash":
                numbers = request["params"][0]
                numbers = numbers if isinstance(numbers, list) else [numbers]
                lowest = min([*numbers, lowest if lowest is not None else numbers[0]])
        methods: dict[str, int] = {}
        for request in sent:
            methods[request["method"]] = methods.get(request["method"], 0) + 1

        print(
            f"\nchain: {head} blocks; protocol from N={first}: {count} blocks to catch up; "
            f"a call at block {early} (before N), one at block {late}"
        )
        print(f"{'reading blocks N..head':<52}{'blocks/s':>10}{'x raw':>8}")
        print(f"{'raw: get_block_hash + get_events per block':<52}{raw_rate:>10.0f}{1.0:>8.2f}")
        rows = (
            ("indexer catch-up from N (chunked, pipelined)", count / fast),
            ("  the same, every block's events decoded afresh", count / cold),
            ("indexer block by block (before this change)", count / old),
        )
        for label, rate in rows:
            print(f"{label:<52}{rate:>10.0f}{rate / raw_rate:>8.2f}")
        by_method = ", ".join(f"{m} {c}" for m, c in methods.items())
        print(f"requests of the catch-up: {len(sent)} ({by_method})")
        print(
            f"lowest block number asked: {lowest} (N={first}); hashes of blocks below N in any "
            f"request: none; models applied: {names}"
        )
        conn.close()
        chain.close()
    finally:
        devchain.down(port)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--history", type=int, default=100, help="blocks before N")
    parser.add_argument("--blocks", type=int, default=300, help="blocks from N to the head")
    parser.add_argument("--runs", type=int, default=3, help="best of this many runs")
    options = parser.parse_args()
    from decentralml_jupyter.chain import devchain

    installed = devchain.install_dir()  # the dev chain's npm packages, where they already are
    with tempfile.TemporaryDirectory(prefix="dfml-bench-from-block-") as home:
        if installed.exists():
            (Path(home) / installed.name).symlink_to(installed)
        os.environ["DFML_HOME"] = home  # a fresh index, and no record of another chain
        main(options.history, options.blocks, options.runs)
