"""The server extension's REST API, served by a real `jupyter server` process on 127.0.0.1
against the session's dev chain and storage: answers, authentication, votes, dead services.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from decentralml_jupyter.cli import run
from tests.conftest import dead_services, free_port, stop_process_tree, unavailable

UNIT = 10**12
ROOT = Path(__file__).resolve().parents[2]
ENDPOINTS = ["status", "accounts", "models", "proposals", "rounds"]


@dataclass
class Server:
    base: str
    token: str
    proc: subprocess.Popen
    chain_url: str = ""

    def get(self, path: str, token: str | None = "", **kw) -> requests.Response:
        return requests.get(f"{self.base}/decentralml/{path}", headers=self._auth(token), **kw)

    def post(self, path: str, body, token: str | None = "", **kw) -> requests.Response:
        headers = self._auth(token)
        return requests.post(f"{self.base}/decentralml/{path}", data=body, headers=headers, **kw)

    def _auth(self, token: str | None) -> dict[str, str]:
        token = self.token if token == "" else token
        return {} if token is None else {"Authorization": f"token {token}"}


stop = stop_process_tree


def start_server(
    tmp: Path, url: str, storage: str, key: str = "//Alice", by_config: bool = False
) -> Server:
    """`jupyter server` with our extension enabled by its shipped config, on a free port; the
    endpoints come from the environment, or from `--DFMLServer.*` options if `by_config`."""
    port, token = free_port(), secrets.token_hex(16)
    for d in ("config", "runtime", "root"):
        (tmp / d).mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "JUPYTER_CONFIG_DIR": str(tmp / "config"),  # no user config leaks in
        "JUPYTER_RUNTIME_DIR": str(tmp / "runtime"),
        "DFML_URL": url,  # the extension's defaults come from the environment
        "DFML_STORAGE": storage,
        "DFML_KEY": key,
    }
    options = []
    if by_config:
        options = [f"--DFMLServer.url={url}", f"--DFMLServer.storage={storage}"]
        options.append(f"--DFMLServer.key={key}")
        for name in ("DFML_URL", "DFML_STORAGE", "DFML_KEY"):
            env.pop(name)
    log = open(tmp / "server.log", "wb")  # noqa: SIM115 - the process writes it until stopped
    proc = subprocess.Popen(
        [sys.executable, "-m", "jupyter_server", "--ServerApp.ip=127.0.0.1",
         f"--ServerApp.port={port}", "--ServerApp.port_retries=0",
         f"--IdentityProvider.token={token}", "--ServerApp.open_browser=False",
         f"--ServerApp.root_dir={tmp / 'root'}", "--allow-root", *options],
        env=env, stdout=log, stderr=subprocess.STDOUT, cwd=tmp,
    )  # fmt: skip
    server = Server(f"http://127.0.0.1:{port}", token, proc, url)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"jupyter server exited: {(tmp / 'server.log').read_text()[-3000:]}")
        try:
            if requests.get(f"{server.base}/api/status", params={"token": token}, timeout=2).ok:
                return server
        except requests.ConnectionError:
            pass
        time.sleep(0.3)
    stop(proc)
    raise RuntimeError(f"jupyter server did not answer: {(tmp / 'server.log').read_text()[-3000:]}")


@pytest.fixture(scope="module")
def server(devchain_url, storage_url, tmp_path_factory):
    """The server signs votes as Bob, who stakes on the model below."""
    s = start_server(tmp_path_factory.mktemp("jserver"), devchain_url, storage_url, "//Bob")
    try:
        yield s
    finally:
        stop(s.proc)


@pytest.fixture(scope="module")
def dfml(devchain_url, storage_url):
    def call(*args: str, key: str = "//Alice"):
        return run(["--url", devchain_url, "--storage", storage_url, "--key", key, *args])

    return call


@pytest.fixture()
def proposal(dfml, tmp_path_factory):
    """A model Bob stakes on, and an open ApproveModel proposal on it: (model id, proposal id).
    One for each test that asks: a test that votes and lets it pass leaves others theirs."""
    from decentralml_jupyter import fl

    path = tmp_path_factory.mktemp("model") / "tiny.keras"
    fl.mlp(64, 10, hidden=(8,)).save(path)
    mid = dfml("model", "submit", str(path), "--validator", "Dev1", "--validator", "Dev2")[
        "model_id"
    ]
    dfml("stake", str(mid), str(25 * UNIT), key="//Bob")
    pid = dfml("propose", str(mid), "ApproveModel", "--deadline", "10")["proposal_id"]
    return mid, pid


def test_status_reports_chain_and_storage(server, devchain_url, storage_url, dfml):
    r = server.get("status", timeout=30)
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("application/json")
    body = r.json()
    chain = body["chain"]
    assert chain["url"] == devchain_url and chain["running"] is True
    assert chain["spec_name"] == "statemine" and isinstance(chain["spec_version"], int)
    assert 0 <= chain["block"] <= dfml("chain", "status")["block"]
    assert body["storage"]["running"] is True
    assert body["storage"]["url"].endswith(f":{storage_url.rsplit(':', 1)[1]}")
    # the chain's token, from its properties, for the panel to show amounts in
    from decentralml_jupyter import Session

    with Session(devchain_url) as s:
        token = s.token()
    assert body["token"] == {"symbol": token["symbol"], "decimals": token["decimals"]}


def test_accounts_are_the_dev_accounts_with_balances(server, dfml):
    r = server.get("accounts", timeout=30)
    assert r.status_code == 200
    accounts = r.json()
    expected = dfml("account", "list")
    assert [a["name"] for a in accounts] == [a["name"] for a in expected]
    assert {"Alice", "Bob", "Dev1"} <= {a["name"] for a in accounts}
    alice = next(a for a in accounts if a["name"] == "Alice")
    assert alice["address"].startswith("5") and set(alice) >= {"name", "address", "free"}
    # amounts as exact decimal strings (u128 exceeds a JavaScript number): the CLI's integers
    cli_alice = next(a for a in expected if a["name"] == "Alice")
    assert isinstance(alice["free"], str) and int(alice["free"]) > 2**53
    assert abs(int(alice["free"]) - cli_alice["free"]) < 10**12  # fees may fall in between
    assert alice["reserved"] == str(cli_alice["reserved"])


def test_models_and_proposals_match_the_cli(server, proposal, dfml):
    mid, pid = proposal
    models = server.get("models", timeout=30).json()
    assert [m["id"] for m in models] == [m["id"] for m in dfml("model", "list")]
    assert next(m for m in models if m["id"] == mid)["status"] == "proposed"
    everything = server.get("proposals", timeout=30).json()
    assert [p["id"] for p in everything] == [p["id"] for p in dfml("proposals")]
    open_now = server.get("proposals?open=1", timeout=30).json()
    mine = next(p for p in open_now if p["id"] == pid)
    assert mine["kind"] == "ApproveModel" and mine["target"] == mid and mine["status"] == "open"
    assert all(p["status"] == "open" for p in open_now)


def test_vote_signs_with_the_configured_key_then_rounds_show(server, proposal, dfml):
    mid, pid = proposal
    r = server.post(f"proposals/{pid}/vote", json.dumps({"choice": "aye"}), timeout=60)
    assert r.status_code == 200, r.text
    receipt = r.json()["receipt"]
    assert receipt["success"] is True and receipt["block_number"] > 0
    tally = next(p for p in dfml("proposals") if p["id"] == pid)
    assert tally["ayes"] == 25 * UNIT and tally["nays"] == 0  # Bob's stake: the server's key

    # the proposal passes, the model trains, and its round is listed as `round status` shows it
    dfml("chain", "advance", "11")
    assert dfml("model", "show", str(mid))["status"] == "approved"
    dfml("model", "start", str(mid))
    rid = dfml("round", "start", str(mid), "--clients", "1")["round_id"]
    rounds = server.get("rounds", timeout=30).json()
    from decentralml_jupyter.jupyter.server import amounts_as_text

    status = json.loads(json.dumps(dfml("round", "status", str(rid))))
    assert rounds[0] == amounts_as_text(status)  # the same, amounts as decimal strings
    assert rounds[0]["status"] == "open" and rounds[0]["model_id"] == mid
    assert [r["round_id"] for r in rounds] == sorted((r["round_id"] for r in rounds), reverse=True)
    assert server.get(f"rounds?model={mid}&limit=1", timeout=30).json() == rounds[:1]


def test_concurrent_requests_all_answer(server):
    """What four open panels do on a new block: 20 requests at once, every view four times
    (calls take turns on the server's one Session), all answered, the same views alike."""
    paths = ENDPOINTS * 4
    results: dict[int, requests.Response] = {}

    def fetch(i: int) -> None:
        results[i] = server.get(paths[i], timeout=60)

    threads = [threading.Thread(target=fetch, args=(i,)) for i in range(len(paths))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(90)
    assert len(paths) == 20 and sorted(results) == list(range(20))
    assert [results[i].status_code for i in range(20)] == [200] * 20
    for path in ("models", "proposals"):
        bodies = {results[i].text for i in range(20) if paths[i] == path}
        assert len(bodies) == 1, path  # no protocol call came in between: one answer


def test_bad_requests_answer_400_with_a_hint(server):
    for body in ("not json", json.dumps({"choice": "maybe"}), json.dumps(["aye"])):
        r = server.post("proposals/1/vote", body, timeout=30)
        assert r.status_code == 400
        assert "aye" in r.json()["error"] and r.json()["hint"]


def test_rounds_limits_and_unknown_models(server, proposal):
    for bad in ("-1", "1001", "many"):
        r = server.get(f"rounds?limit={bad}", timeout=30)
        assert r.status_code == 400, (bad, r.text)
        assert "0..1000" in r.json()["error"] and r.json()["hint"]
    r = server.get("rounds?limit=0", timeout=30)
    assert r.status_code == 200 and r.json() == []
    r = server.get("rounds?model=999999", timeout=30)
    assert r.status_code == 404, r.text
    assert "no model 999999" in r.json()["error"] and "model list" in r.json()["hint"]


def test_a_bad_configured_key_is_the_servers_fault(devchain_url, storage_url, proposal, tmp_path):
    _, pid = proposal
    secret = "not a key at all, nor a file"
    s = start_server(tmp_path, devchain_url, storage_url, key=secret, by_config=True)
    try:
        r = s.post(f"proposals/{pid}/vote", json.dumps({"choice": "aye"}), timeout=60)
        assert r.status_code == 500, r.text
        assert "signing key" in r.json()["error"] and "DFMLServer.key" in r.json()["hint"]
        assert secret not in r.text  # never echoed
        assert s.get("models", timeout=30).status_code == 200  # reading needs no key
    finally:
        stop(s.proc)


def test_an_unexpected_failure_is_a_500_in_the_contract():
    import asyncio
    import logging
    from types import SimpleNamespace as NS

    from decentralml_jupyter.jupyter.server import DFMLHandler

    answered: dict = {}

    async def boom(fn):
        raise RuntimeError("a bug")

    handler = NS(
        dfml=NS(call=boom),
        request=NS(path="/decentralml/models"),
        log=logging.getLogger("test"),
        fail=lambda code, body: answered.update(code=code, body=body),
        finish=lambda text: answered.update(finished=text),
    )
    # in a thread of its own: an event loop of an earlier test may run in this one
    runner = threading.Thread(
        target=asyncio.run, args=(DFMLHandler.answer(handler, lambda s: s.models()),)
    )
    runner.start()
    runner.join(30)
    assert answered["code"] == 500 and "finished" not in answered
    assert answered["body"] == {"error": "RuntimeError: a bug", "hint": "see the server log"}


def test_a_rejected_vote_is_a_409_with_the_reason(server, dfml):
    r = server.post("proposals/999999/vote", json.dumps({"choice": "nay"}), timeout=60)
    assert r.status_code == 409, r.text
    assert "rejected" in r.json()["error"] and r.json()["hint"]


@pytest.mark.parametrize("token", [None, "wrong-token"])
def test_unauthenticated_requests_are_refused(server, token):
    for path in ENDPOINTS:
        r = server.get(path, token=token, timeout=30)
        assert r.status_code in (401, 403), (path, r.status_code)
        assert "block" not in r.text
    r = server.post("proposals/1/vote", json.dumps({"choice": "aye"}), token=token, timeout=30)
    assert r.status_code in (401, 403)


@pytest.fixture(scope="module")
def dead_server(tmp_path_factory):
    """A server whose chain refuses connections and whose storage accepts but never answers."""
    with dead_services() as (url, storage):
        s = start_server(tmp_path_factory.mktemp("dead"), url, storage, by_config=True)
        try:
            yield s
        finally:
            stop(s.proc)


def test_a_dead_chain_answers_json_errors_with_hints(dead_server):
    for path in ("accounts", "models", "proposals", "rounds"):
        r = dead_server.get(path, timeout=30)
        assert r.status_code == 503, (path, r.text)
        body = r.json()
        assert f"not reachable at {dead_server.chain_url}" in body["error"]  # --DFMLServer.url
        assert "dfml chain up" in body["hint"]
    r = dead_server.post("proposals/1/vote", json.dumps({"choice": "aye"}), timeout=30)
    assert r.status_code == 503 and "dfml chain up" in r.json()["hint"]


def test_slow_services_do_not_block_the_server(dead_server):
    """Storage status waits ~2 s on the silent socket; the server keeps answering meanwhile."""
    result: dict = {}
    slow = threading.Thread(target=lambda: result.update(r=dead_server.get("status", timeout=30)))
    slow.start()
    time.sleep(0.3)
    quick = requests.get(
        f"{dead_server.base}/api/status", params={"token": dead_server.token}, timeout=30
    )
    # answered while the slow request was still running: the server did not wait for it
    assert quick.ok and slow.is_alive()
    slow.join(30)
    body = result["r"].json()
    assert body["chain"]["running"] is False and body["storage"]["running"] is False


def test_the_extensions_are_enabled_in_this_environment():
    """What `pip install` (and make setup's `jupyter-builder develop`) leaves behind."""
    shipped = json.loads(
        (ROOT / "jupyter-config/jupyter_server_config.d/decentralml_jupyter.json").read_text()
    )
    assert shipped["ServerApp"]["jpserver_extensions"] == {"decentralml_jupyter": True}
    env = {**os.environ, "NO_COLOR": "1"}
    bindir = Path(sys.executable).parent
    server = subprocess.run(
        [bindir / "jupyter", "server", "extension", "list"],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    out = server.stdout + server.stderr
    assert "decentralml_jupyter" in out and "enabled" in out.split("decentralml_jupyter", 1)[1]
    lab = subprocess.run(
        [bindir / "jupyter", "labextension", "list"],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    line = next(
        (x for x in (lab.stdout + lab.stderr).splitlines() if "decentralml-jupyter" in x), ""
    )
    if not line and not (ROOT / "decentralml_jupyter/labextension/package.json").exists():
        unavailable("the side panel is not built here (no Node.js): run make setup")
    assert "enabled" in line and "OK" in line, lab.stdout + lab.stderr
