"""The demo: a dev chain up, its funded accounts, a transfer and a protocol-style remark, down.

Run by `make demo`. Every step goes through the same verbs as `dfml` and `%dfml`.
"""

from __future__ import annotations

import socket
import sys
import time

from decentralml_jupyter.cli import run


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def show(title: str, result) -> None:
    print(f"\n== {title}")
    rows = result if isinstance(result, list) else [result]
    for row in rows:
        print("  " + ", ".join(f"{k}={v}" for k, v in row.items()))


def main() -> int:
    port = 9944
    with socket.socket() as s:
        if s.connect_ex(("127.0.0.1", port)) == 0:
            port = free_port()  # leave a chain the user already runs alone
    url = ["--url", f"ws://127.0.0.1:{port}"]
    t0 = time.monotonic()
    show("dev chain up", run([*url, "chain", "up", "--accounts", "2"]))
    print(f"  (ready in {time.monotonic() - t0:.1f} s)")
    try:
        show("funded dev accounts", run([*url, "account", "list"]))
        transfer = run([*url, "--key", "//Alice", "account", "transfer", "Bob", "2500000000000"])
        show("transfer 2.5 tokens Alice -> Bob: receipt", transfer["receipt"])
        remark = run([*url, "--key", "//Alice", "remark", "--hex", b"dfml\x01demo".hex()])
        show("protocol-style remark: receipt", remark["receipt"])
        show("balances after", [run([*url, "account", "balance", w]) for w in ("Alice", "Bob")])
        show("chain status", run([*url, "chain", "status"]))
    finally:
        show("dev chain down", run([*url, "chain", "down"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
