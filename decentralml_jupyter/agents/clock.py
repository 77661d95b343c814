"""The dev network's clock: a dev chain in instant mode builds blocks only for transactions,
so round and vote deadlines (counted in blocks) would never pass on an idle network. This
builds an empty block every ``interval`` seconds when nothing else did.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading

from ..chain import Chain


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="dfml clock", description=__doc__)
    p.add_argument("--url", required=True)
    p.add_argument("--interval", type=float, default=3.0)
    a = p.parse_args(argv)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    with Chain(a.url) as chain:
        last = chain.block_number()
        while not stop.wait(a.interval):
            head = chain.block_number()
            if head == last:  # idle since the last tick
                head = chain.new_blocks(1)
            last = head
    return 0


if __name__ == "__main__":
    sys.exit(main())
