"""Protocol calls per second with and without batching, and how many update submissions one
extrinsic / one block takes on the dev chain.

N `submit_update` remarks (57 bytes each, with a 46-character CID) go to the chain as
  (a) N separate extrinsics from N signers, submitted at once, batch block mode
  (b) N separate extrinsics from N signers, submitted at once, instant block mode
  (c) one Utility.batch_all of N remarks signed by one account
  (d) one Utility.batch_all of N Proxy.proxy(real, remark_with_event) calls signed by one
      delegate for N real accounts (the first --genuine-proxies reals ran
      Proxy.add_proxy(delegate, Any, 0) themselves, the others got a storage copy of it)
timed from the first `author_submitAndWatchExtrinsic` to the last `inBlock` notification (the
calls are composed and signed before the clock starts; that client cost is its own column).
(d) checks that every System.Remarked event names the real account as sender, which is how
the protocol's indexer attributes a proxied remark, and runs the indexer's extraction on it.

Then the runtime's limits (System.BlockWeights, System.BlockLength,
Utility.batched_calls_limit) give the largest batch_all of remarks and of proxied remarks;
that size is submitted (and timed), one more is submitted (and refused), and two batches that
fit one at a time but not together are submitted at once, to see what the block does.

One dev chain on a free 127.0.0.1 port, stopped in a finally; about 3.5 minutes on 2 cores,
most of it in the separate-extrinsic rows (Chopsticks spends ~0.25 s per extrinsic).
Printed, not a test: `python benchmarks/bench_batching.py [--sizes 1,10,50,100]
[--big-sizes 500,1000] [--genuine-proxies 10]`.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from dataclasses import dataclass, field

from websocket import create_connection

from decentralml_jupyter import procs
from decentralml_jupyter.chain import Chain, devchain
from decentralml_jupyter.protocol import encoders
from decentralml_jupyter.protocol.accounts import normalize_address
from decentralml_jupyter.protocol.indexer import extract_calls

CID = "QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG"  # 46 characters, like every CIDv0
ROUND_ID = 7
BATCH_SIGNER = "//Bob"  # (c)
DELEGATE = "//Alice"  # (d): signs for the real accounts Dev1..DevN
LIMIT_SIGNER = "//Eve"  # part 2: the largest batch
FILL_SIGNERS = ("//Charlie", "//Dave")  # part 2: two batches that do not fit one block together


def update_remark(i: int) -> bytes:
    """The i-th worker's update submission for one round: distinct bytes, the same size."""
    return encoders.submit_update(ROUND_ID, CID, 1000 + i)


def remark_spec(i: int) -> dict:
    """System.remark_with_event as a nested call value (composed in one go with its batch)."""
    return {
        "call_module": "System",
        "call_function": "remark_with_event",
        "call_args": {"remark": "0x" + update_remark(i).hex()},
    }


def proxy_spec(real: str, i: int) -> dict:
    return {
        "call_module": "Proxy",
        "call_function": "proxy",
        "call_args": {"real": real, "force_proxy_type": None, "call": remark_spec(i)},
    }


def ref_time(weight) -> int:
    """A weight's computation part: a plain integer on old runtimes, ref_time on newer ones."""
    if isinstance(weight, dict):
        return int(weight.get("ref_time", weight.get("refTime")))
    return int(weight)


@dataclass
class Sent:
    """What happened to a set of extrinsics submitted together."""

    accepted_s: float = 0.0  # until the last submission was validated and pooled
    included_s: float = 0.0  # until the last inBlock
    blocks: dict[str, int] = field(default_factory=dict)  # block hash -> our extrinsics in it
    errors: list[str] = field(default_factory=list)


def submit_and_watch(
    url: str, extrinsics: list[str], timeout: float = 300.0, on_accepted=None
) -> Sent:
    """Send every extrinsic at once on one websocket and wait for each to land or fail.

    ``on_accepted`` runs once the chain has answered every submission (e.g. to build the
    block by hand in manual block mode).
    """
    out = Sent()
    ws = create_connection(url, timeout=timeout)
    try:
        subs: dict[str, int] = {}
        early: dict[str, list] = {}  # notifications that came before their subscription id
        done: set[int] = set()
        t0 = time.perf_counter()
        for i, ext in enumerate(extrinsics):
            req = {"jsonrpc": "2.0", "id": i, "method": "author_submitAndWatchExtrinsic"}
            ws.send(json.dumps({**req, "params": [ext]}))

        def update(i: int, result) -> None:
            if i in done or not isinstance(result, dict):
                return  # "ready" and the like
            if "inBlock" in result:
                out.blocks[result["inBlock"]] = out.blocks.get(result["inBlock"], 0) + 1
                out.included_s = time.perf_counter() - t0
                done.add(i)
            elif not {"ready", "broadcast", "finalized"} & set(result):
                out.errors.append(f"dropped from the block: {json.dumps(result)}")
                done.add(i)

        replies = 0
        while len(done) < len(extrinsics):
            msg = json.loads(ws.recv())
            if "id" in msg and msg["id"] is not None:
                replies += 1
                if replies == len(extrinsics):
                    out.accepted_s = time.perf_counter() - t0
                    if on_accepted is not None:
                        on_accepted()
                if "error" in msg:
                    out.errors.append(f"refused: {msg['error'].get('message')}")
                    done.add(msg["id"])
                else:
                    subs[msg["result"]] = msg["id"]
                    for result in early.pop(msg["result"], []):
                        update(msg["id"], result)
            elif msg.get("method") == "author_extrinsicUpdate":
                sub, result = msg["params"]["subscription"], msg["params"]["result"]
                if sub in subs:
                    update(subs[sub], result)
                else:
                    early.setdefault(sub, []).append(result)
    finally:
        ws.close()
    return out


class Bench:
    def __init__(self, chain: Chain):
        self.chain = chain
        self.url = chain.url
        self._keys: dict = {}
        self._nonces: dict[str, int] = {}

    def key(self, uri: str):
        if uri not in self._keys:
            self._keys[uri] = self.chain.keypair(uri)
        return self._keys[uri]

    def addr(self, uri: str) -> str:
        return self.key(uri).ss58_address

    def sign(self, uri: str, call) -> str:
        """A signed extrinsic as hex, with the signer's next nonce (tracked here)."""
        if uri not in self._nonces:
            self._nonces[uri] = self.chain.nonce(uri)
        ext = self.chain.sign(self.key(uri), call, nonce=self._nonces[uri])
        self._nonces[uri] += 1
        return str(ext.data)

    def set_nonce(self, uri: str, nonce: int) -> None:
        self._nonces[uri] = nonce

    def forget_nonce(self, uri: str) -> None:
        self._nonces.pop(uri, None)  # after a refused or dropped extrinsic: ask the chain

    def mode(self, mode: str) -> None:
        self.chain._rpc("dev_setBlockBuildMode", [mode])

    def remarked(self, sent: Sent) -> list[str]:
        """The senders of every System.Remarked event in the blocks ``sent`` landed in."""
        senders = []
        for h in sent.blocks:
            for e in self.chain.events(h):
                if (e["module"], e["event"]) == ("System", "Remarked"):
                    senders.append(normalize_address(e["attributes"]["sender"]))
        return senders

    def proxy_failures(self, sent: Sent) -> int:
        bad = 0
        for h in sent.blocks:
            for e in self.chain.events(h):
                if (e["module"], e["event"]) == ("Proxy", "ProxyExecuted"):
                    result = e["attributes"]["result"]
                    bad += isinstance(result, dict) and "Err" in result
        return bad


# ---------------------------------------------------------------------------------------------
# proxies


def setup_proxies(b: Bench, reals: list[str], genuine: int) -> dict:
    """Every real account in ``reals`` gets DELEGATE as an Any proxy with no delay.

    The first ``genuine`` run Proxy.add_proxy themselves (separate extrinsics, batch mode); the
    rest get a copy of the first one's Proxy.Proxies entry and System.Account record (deposit
    reserved alike) written with dev_setStorage, since hundreds of add_proxy extrinsics would
    take minutes on Chopsticks and Proxy.proxy reads the same storage however it got there.
    """
    chain = b.chain
    delegate = b.addr(DELEGATE)
    call = chain.call("Proxy", "add_proxy", {"delegate": delegate, "proxy_type": "Any", "delay": 0})
    first = reals[0]
    before = chain.balance(first)
    t0 = time.perf_counter()
    sent = submit_and_watch(b.url, [b.sign(r, call) for r in reals[:genuine]])
    elapsed = time.perf_counter() - t0
    if sent.errors:
        raise SystemExit(f"add_proxy failed: {sent.errors[:3]}")
    after = chain.balance(first)
    entry = chain.substrate.query("Proxy", "Proxies", [b.addr(first)]).value
    copied = reals[genuine:]
    if copied:
        sub = chain.substrate
        pairs = []
        for storage, fn in (("Proxy", "Proxies"), ("System", "Account")):
            src = sub.create_storage_key(storage, fn, [b.addr(first)]).to_hex()
            raw = chain._rpc("state_getStorage", [src])
            for r in copied:
                pairs.append([sub.create_storage_key(storage, fn, [b.addr(r)]).to_hex(), raw])
        chain._rpc("dev_setStorage", [pairs])
        nonce = chain.nonce(first)  # copied with the account record
        for r in copied:
            b.set_nonce(r, nonce)
        check = chain.substrate.query("Proxy", "Proxies", [b.addr(copied[-1])]).value
        assert check == entry, "the copied proxy entry must read back like the original"
    return {
        "entry": entry,
        "reserved": after.reserved - before.reserved,
        "fee": before.free - after.free - (after.reserved - before.reserved),
        "genuine_s": elapsed,
        "genuine_blocks": len(sent.blocks),
        "copied": len(copied),
    }


# ---------------------------------------------------------------------------------------------
# part 1


@dataclass
class Row:
    way: str
    n: int
    extrinsics: int
    blocks: int
    build_s: float
    accepted_s: float
    included_s: float
    ok: str

    @property
    def rate(self) -> float:
        return self.n / self.included_s if self.included_s else float("nan")


def separate(b: Bench, way: str, signers: list[str]) -> Row:
    t0 = time.perf_counter()
    exts = [b.sign(s, b.chain.remark_call(update_remark(i))) for i, s in enumerate(signers)]
    build = time.perf_counter() - t0
    sent = submit_and_watch(b.url, exts)
    senders = b.remarked(sent)
    ok = "ok" if not sent.errors and len(senders) == len(signers) else f"{sent.errors[:1]}"
    return Row(
        way, len(signers), len(exts), len(sent.blocks), build, sent.accepted_s, sent.included_s, ok
    )


def batched(b: Bench, n: int) -> Row:
    t0 = time.perf_counter()
    call = b.chain.call("Utility", "batch_all", {"calls": [remark_spec(i) for i in range(n)]})
    ext = b.sign(BATCH_SIGNER, call)
    build = time.perf_counter() - t0
    sent = submit_and_watch(b.url, [ext])
    if sent.errors:
        b.forget_nonce(BATCH_SIGNER)
        return Row("c batch_all", n, 1, 0, build, sent.accepted_s, 0.0, sent.errors[0])
    senders = b.remarked(sent)
    ok = "ok" if senders == [b.addr(BATCH_SIGNER)] * n else f"{len(senders)} Remarked events"
    return Row("c batch_all", n, 1, len(sent.blocks), build, sent.accepted_s, sent.included_s, ok)


def proxied(b: Bench, reals: list[str], genuine: int) -> Row:
    n = len(reals)
    t0 = time.perf_counter()
    specs = [proxy_spec(b.addr(r), i) for i, r in enumerate(reals)]
    call = b.chain.call("Utility", "batch_all", {"calls": specs})
    ext = b.sign(DELEGATE, call)
    build = time.perf_counter() - t0
    sent = submit_and_watch(b.url, [ext])
    if sent.errors:
        b.forget_nonce(DELEGATE)
        return Row("d batch proxy", n, 1, 0, build, sent.accepted_s, 0.0, sent.errors[0])
    senders = b.remarked(sent)
    want = [normalize_address(b.addr(r)) for r in reals]
    failed = b.proxy_failures(sent)
    ok = "senders=reals" if senders == want and not failed else "SENDERS ARE NOT THE REALS"
    if n > genuine:
        ok += f" ({n - genuine} proxies storage-copied)"
    if n <= 100:  # the indexer's own extraction, on blocks it decodes quickly
        block_hash = next(iter(sent.blocks))
        chain = b.chain
        with chain._lock:
            extrinsics = chain.substrate.get_block(block_hash=block_hash)["extrinsics"]
        found = extract_calls(
            extrinsics, chain.events(block_hash), chain.block_number(block_hash), block_hash
        )
        signers = [ctx.signer for ctx, _ in found]
        indexes = sorted({ctx.batch_index for ctx, _ in found})
        ok += ", indexer " + ("attributes to reals" if signers == want else "MISATTRIBUTES")
        if n > 1 and indexes != list(range(n)):
            ok += f" (batch_index {indexes[:3]}{'...' if len(indexes) > 3 else ''})"
    return Row("d batch proxy", n, 1, len(sent.blocks), build, sent.accepted_s, sent.included_s, ok)


# ---------------------------------------------------------------------------------------------
# part 2


def batch_weight(b: Bench, specs: list[dict], signer: str) -> tuple[int, int]:
    """(dispatch weight, encoded length) of a batch_all of ``specs``, from payment_info."""
    call = b.chain.call("Utility", "batch_all", {"calls": specs})
    with b.chain._lock:
        info = b.chain.substrate.get_payment_info(call, b.key(signer))
    return ref_time(info["weight"]), len(call.data)


def largest_batch(b: Bench, spec, signer: str, max_ext: int, base_ext: int) -> tuple[int, dict]:
    """The most calls one batch_all may hold under max_extrinsic, from the metadata weights."""
    w1, len1 = batch_weight(b, [spec(i) for i in range(1)], signer)
    w2, len2 = batch_weight(b, [spec(i) for i in range(101)], signer)
    per_call, fixed = (w2 - w1) / 100, w1 - (w2 - w1) / 100
    n = int((max_ext - base_ext - fixed) // per_call)

    def fits(k: int) -> bool:
        return batch_weight(b, [spec(i) for i in range(k)], signer)[0] + base_ext <= max_ext

    while not fits(n):  # the weights are linear; this only settles rounding
        n -= 1
    while fits(n + 1):
        n += 1
    return n, {"per_call": per_call, "fixed": fixed, "bytes_per_call": (len2 - len1) / 100}


def timed_batch(b: Bench, signer: str, specs: list[dict]) -> Sent:
    call = b.chain.call("Utility", "batch_all", {"calls": specs})
    sent = submit_and_watch(b.url, [b.sign(signer, call)])
    if sent.errors:
        b.forget_nonce(signer)
    return sent


# ---------------------------------------------------------------------------------------------


def fmt_rate(x: float) -> str:
    return f"{x:10.1f}" if x == x else f"{'-':>10}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--sizes", default="1,10,50,100", help="N for all four ways")
    ap.add_argument("--big-sizes", default="500,1000", help="extra N for (c) and (d) only")
    ap.add_argument(
        "--genuine-proxies",
        type=int,
        default=10,
        help="real accounts that run Proxy.add_proxy themselves (the rest get a storage copy)",
    )
    args = ap.parse_args()
    sizes = [int(x) for x in args.sizes.split(",") if x]
    big = [int(x) for x in args.big_sizes.split(",") if x]
    n_reals = max(sizes + big)
    t_start = time.perf_counter()
    phases: dict[str, float] = {}
    devchain.install()
    port = procs.free_port()
    devchain.up(port=port, accounts=n_reals, block_mode="batch")
    try:
        chain = Chain(f"ws://127.0.0.1:{port}")
        b = Bench(chain)
        rt = chain.runtime()
        print(
            f"batching benchmark on {rt['spec_name']} {rt['spec_version']} (Chopsticks), "
            f"{os.cpu_count()} cores, remark = submit_update with a {len(CID)}-char CID "
            f"({len(update_remark(0))} bytes)"
        )
        sub = chain.substrate
        weights = sub.get_constant("System", "BlockWeights").value
        length = sub.get_constant("System", "BlockLength").value
        calls_limit = sub.get_constant("Utility", "batched_calls_limit").value
        deposit_base = sub.get_constant("Proxy", "ProxyDepositBase").value
        deposit_factor = sub.get_constant("Proxy", "ProxyDepositFactor").value
        max_proxies = sub.get_constant("Proxy", "MaxProxies").value
        normal = weights["per_class"]["normal"]
        max_ext, max_total = ref_time(normal["max_extrinsic"]), ref_time(normal["max_total"])
        base_ext = ref_time(normal["base_extrinsic"])
        proxy_type = sub.get_metadata_call_function("Proxy", "add_proxy").value["fields"]

        # -- proxies ----------------------------------------------------------------------------
        reals = [f"//Dev{i}" for i in range(1, n_reals + 1)]
        genuine = max(1, min(args.genuine_proxies, n_reals))
        px = setup_proxies(b, reals, genuine)
        phases["chain up + proxies"] = time.perf_counter() - t_start
        print(
            f"\nProxy.add_proxy({', '.join(f['name'] for f in proxy_type)}) with proxy_type "
            f"'Any', delay 0, delegate {DELEGATE}: {genuine} real accounts signed it "
            f"({px['genuine_s']:.1f} s, {px['genuine_blocks']} blocks), {px['copied']} got a "
            "storage copy"
        )
        print(
            f"  deposit reserved per real account: {px['reserved']} "
            f"(= ProxyDepositBase {deposit_base} + ProxyDepositFactor {deposit_factor} x 1 "
            f"proxy: {deposit_base + deposit_factor}), fee {px['fee']}, MaxProxies {max_proxies}"
        )

        # -- part 1 -----------------------------------------------------------------------------
        rows: list[Row] = []
        signers = reals  # Dev1..DevN sign their own remarks in (a) and (b)
        t_phase = time.perf_counter()
        b.mode("Batch")
        for n in sizes:
            rows.append(separate(b, "a separate/batch", signers[:n]))
        b.mode("Instant")
        for n in sizes:
            rows.append(separate(b, "b separate/inst", signers[:n]))
        phases["separate extrinsics"] = time.perf_counter() - t_phase
        t_phase = time.perf_counter()
        b.mode("Batch")
        for n in sizes + big:
            rows.append(batched(b, n))
        for n in sizes + big:
            rows.append(proxied(b, reals[:n], genuine))
        phases["batches"] = time.perf_counter() - t_phase
        t_phase = time.perf_counter()

        print(
            f"\n{'way':17} {'N':>5} {'exts':>5} {'blocks':>6} {'build s':>8} {'accepted s':>10} "
            f"{'included s':>10} {'calls/s':>10}  check"
        )
        for r in rows:
            print(
                f"{r.way:17} {r.n:5} {r.extrinsics:5} {r.blocks:6} {r.build_s:8.2f} "
                f"{r.accepted_s:10.2f} {r.included_s:10.2f} {fmt_rate(r.rate)}  {r.ok}"
            )
        by = {(r.way[0], r.n): r for r in rows if r.included_s}
        print("\nratios of calls/s at the same N (d = batch_all of proxied remarks):")
        for n in sizes + big:
            parts = []
            for num, den in (("d", "a"), ("d", "b"), ("c", "a"), ("d", "c"), ("a", "b")):
                if (num, n) in by and (den, n) in by:
                    parts.append(f"{num}/{den} {by[(num, n)].rate / by[(den, n)].rate:7.1f}x")
            if parts:
                print(f"  N={n:<5} " + "   ".join(parts))
        ds = [r for r in by.values() if r.way[0] == "d"]
        if sizes and ds:
            top = max(sizes)
            best_d = max(ds, key=lambda r: r.rate)
            print(
                f"  best batched proxy rate ({best_d.rate:.0f} calls/s at N={best_d.n}) / "
                f"separate extrinsics at N={top}: batch mode "
                f"{best_d.rate / by[('a', top)].rate:.0f}x, instant mode "
                f"{best_d.rate / by[('b', top)].rate:.0f}x"
            )

        # -- part 2 -----------------------------------------------------------------------------
        print(
            "\nlimits (runtime constants): System.BlockWeights normal class max_extrinsic "
            f"{max_ext}, max_total {max_total}, base_extrinsic {base_ext}, block max "
            f"{ref_time(weights['max_block'])}; System.BlockLength normal "
            f"{length['max']['normal']} bytes; Utility.batched_calls_limit {calls_limit}"
        )
        real_addrs = [b.addr(r) for r in reals]

        def proxy_at(i: int) -> dict:
            return proxy_spec(real_addrs[i % len(real_addrs)], i)

        found = {}
        for label, spec, signer in (
            ("remarks", remark_spec, LIMIT_SIGNER),
            ("proxied remarks", proxy_at, DELEGATE),
        ):
            n_max, lin = largest_batch(b, spec, signer, max_ext, base_ext)
            found[label] = (n_max, lin)
            by_length = int(length["max"]["normal"] // lin["bytes_per_call"])
            binding = min(
                ("weight (max_extrinsic)", n_max),
                ("Utility.batched_calls_limit", calls_limit),
                ("BlockLength", by_length),
                key=lambda x: x[1],
            )
            print(
                f"  batch_all of {label}: {lin['per_call'] / 1e6:.1f} M weight and "
                f"{lin['bytes_per_call']:.0f} bytes per call -> at most {n_max} by weight, "
                f"{calls_limit} by batched_calls_limit, ~{by_length} by length; "
                f"binding: {binding[0]}"
            )
            ok = timed_batch(b, signer, [spec(i) for i in range(n_max)])
            n_events = len(b.remarked(ok)) if ok.blocks else 0
            print(
                f"    {n_max} calls: "
                + (
                    f"included, {n_events} Remarked events, accepted after "
                    f"{ok.accepted_s:.2f} s, in block after {ok.included_s:.2f} s "
                    f"({n_max / ok.included_s:.0f} calls/s)"
                    if not ok.errors
                    else f"NOT included: {ok.errors[0]}"
                )
            )
            over = timed_batch(b, signer, [spec(i) for i in range(n_max + 1)])
            print(
                f"    {n_max + 1} calls: "
                + (over.errors[0] if over.errors else f"INCLUDED in {len(over.blocks)} block(s)")
                + f" after {max(over.accepted_s, over.included_s):.2f} s"
            )

        # a block's normal class: two batch_alls that fit it together, then two that do not,
        # each pair in the pool before one block is built (manual block mode)
        n_one, lin = found["remarks"]
        per_block = int((max_total - 2 * (base_ext + lin["fixed"])) // lin["per_call"])
        print(f"  one block's normal class (max_total) holds ~{per_block} remarks in 2 batch_alls")
        b.mode("Manual")
        for k in (per_block // 2, min(n_one, math.ceil(per_block * 0.55))):
            specs = [remark_spec(i) for i in range(k)]
            call = chain.call("Utility", "batch_all", {"calls": specs})
            exts = [b.sign(s, call) for s in FILL_SIGNERS]
            fill = submit_and_watch(
                b.url, exts, on_accepted=lambda: chain._rpc("dev_newBlock", [{"count": 1}])
            )
            heights = sorted(chain.block_number(h) for h in fill.blocks)
            print(
                f"    two batch_alls of {k} in one block: {sum(fill.blocks.values())} included "
                f"(block {heights}, {len(b.remarked(fill))} Remarked events, built "
                f"{fill.included_s - fill.accepted_s:.2f} s after both were accepted), "
                f"{len(fill.errors)} not" + (f": {fill.errors[0]}" if fill.errors else "")
            )
            if fill.errors:
                for s in FILL_SIGNERS:
                    b.forget_nonce(s)
                print(
                    "    (Chopsticks drops an extrinsic that no longer fits the block it builds; "
                    "a real node's block author leaves it in the pool for a later block)"
                )
        b.mode("Batch")
        phases["limits"] = time.perf_counter() - t_phase
        chain.close()
    finally:
        devchain.down(port)
    print(
        f"\ntotal {time.perf_counter() - t_start:.0f} s ("
        + ", ".join(f"{k} {v:.0f} s" for k, v in phases.items())
        + ")"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
