"""Protocol throughput: the indexer's replay rate against the raw block-fetch rate on the same
chain (a ratio), and protocol calls per second end to end in batch mode.

Printed, not a test: `python benchmarks/bench_protocol.py [-n 200]`.
"""

from __future__ import annotations

import argparse
import sys
import time

from decentralml_jupyter import procs
from decentralml_jupyter.chain import Chain, devchain
from decentralml_jupyter.protocol import encoders
from decentralml_jupyter.protocol.client import ProtocolClient
from decentralml_jupyter.protocol.indexer import Indexer

CID = "QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("-n", type=int, default=200, help="protocol calls to send")
    args = ap.parse_args()
    port = procs.free_port()
    devchain.up(port=port, block_mode="batch", accounts=0)
    try:
        chain = Chain(f"ws://127.0.0.1:{port}")
        proto = ProtocolClient(chain, Indexer(chain))
        # a model's pool takes funds only as a multisig of two or more validators: with none,
        # every stake would be refused and refunded
        validators = [chain.address(n) for n in ("Dev1", "Dev2", "Dev3")]
        reg = proto.register_model("//Alice", "bench", CID, CID, validators=validators)
        model_id = reg.created_id("model")
        pool = proto.state().model(model_id).pool

        # end to end: signed stake calls (transfer + remark in one batch_all), pipelined
        senders = ["//Bob", "//Charlie", "//Dave", "//Eve", "//Ferdie"]
        nonces = {s: chain.nonce(s) for s in senders}
        signed = []
        for i in range(args.n):
            who = senders[i % len(senders)]
            call = chain.batch_all_call(
                [
                    chain.transfer_call(pool, 10**10),
                    chain.remark_call(encoders.stake(model_id, 10**10)),
                ]
            )
            signed.append(chain.sign(who, call, nonce=nonces[who]))
            nonces[who] += 1
        t0 = time.perf_counter()
        for ext in signed:
            chain.substrate.submit_extrinsic(ext, wait_for_inclusion=False)
        while any(chain.nonce(s) < n for s, n in nonces.items()):
            time.sleep(0.05)
        head = chain.block_number()
        state = proto.indexer.sync(head)
        e2e = time.perf_counter() - t0
        staked = sum(s.amount for s in state.stakes(model_id=model_id))
        assert staked == args.n * 10**10, "every stake must count"
        print(f"{args.n} stake calls (batch_all of transfer + remark), batch block mode")
        print(f"  end to end, submitted to indexed: {args.n / e2e:.1f} calls/s over {head} blocks")

        # replay: a fresh indexer over the same blocks, against fetching the same blocks raw
        t0 = time.perf_counter()
        for n in range(1, head + 1):
            h = chain.block_hash(n)
            chain.substrate.get_block(block_hash=h)
            chain.events(h)
        raw = time.perf_counter() - t0
        fresh = Indexer(chain)
        t0 = time.perf_counter()
        fresh.sync(head)
        replay = time.perf_counter() - t0
        assert fresh.state.state_hash() == state.state_hash()
        print(f"  raw block+events fetch: {head / raw:.1f} blocks/s")
        print(f"  indexer replay: {head / replay:.1f} blocks/s, {args.n / replay:.1f} calls/s")
        print(f"  replay / raw fetch ratio: {raw / replay:.2f} (1.0 = as fast as fetching)")
        proto.close()
    finally:
        devchain.down(port)
    return 0


if __name__ == "__main__":
    sys.exit(main())
