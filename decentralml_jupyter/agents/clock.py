"""The dev network's clock: a dev chain in instant mode builds blocks only for transactions,
so round and vote deadlines (counted in blocks) would never pass on an idle network. This
builds an empty block every ``interval`` seconds when nothing else did.

It outlives its chain: when the chain goes away (a crash, a restart) it logs it, waits with
backoff and carries on once the chain answers again, so deadlines keep passing.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading

from ..chain import Chain
from ..errors import ChainNotReachable

log = logging.getLogger("dfml.clock")
MAX_BACKOFF = 10.0  # seconds between attempts while the chain is away


def tick(chain: Chain, last: int) -> int:
    """One tick: an empty block if none was built since ``last``; the head number after it."""
    head = chain.block_number()
    if head == last:  # idle since the last tick
        head = chain.new_blocks(1)
    return head


def run(url: str, interval: float, stop: threading.Event) -> None:
    chain: Chain | None = None
    last, failures = -1, 0
    while not stop.is_set():
        try:
            if chain is None:
                chain = Chain(url)
                log.info("clock following %s every %g s", url, interval)
            last = tick(chain, last)
            if failures:
                log.info("chain back after %d failed tick(s)", failures)
            failures = 0
        except Exception as exc:  # noqa: BLE001 - a dead chain's errors come in many classes
            failures += 1
            if failures == 1 or not isinstance(exc, ChainNotReachable):
                log.warning("tick failed (%s): retrying with backoff", exc)
            if chain is not None:
                try:
                    chain.close()
                except Exception:  # noqa: BLE001 - closing a dead socket may fail too
                    pass
                chain = None
        stop.wait(interval if not failures else min(interval * 2**failures, MAX_BACKOFF))
    if chain is not None:
        chain.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="dfml clock", description=__doc__)
    p.add_argument("--url", required=True)
    p.add_argument("--interval", type=float, default=3.0)
    a = p.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s", force=True
    )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    run(a.url, a.interval, stop)
    return 0


if __name__ == "__main__":
    sys.exit(main())
