"""Jupyter server extension: the REST API under `<base_url>/decentralml/` read by the side panel.

Every handler runs one `dfml` verb through `cli.run`, so the panel, the CLI and the magics share
one implementation; the verbs block on the chain, so they run in a thread pool, never on the loop.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import tornado.web
from jupyter_server.base.handlers import APIHandler
from jupyter_server.utils import url_path_join
from traitlets import Unicode, default
from traitlets.config import Configurable

from .. import config
from ..errors import (
    ChainNotReachable,
    DfmlError,
    DispatchFailed,
    KeyLoadError,
    NotFound,
    StorageError,
    TransactionRejected,
    UsageError,
)

ROUTE = "decentralml"


class DFMLServer(Configurable):
    """Endpoints and signing key of the server extension (`c.DFMLServer.url = ...`)."""

    url = Unicode(help="chain endpoint (default: $DFML_URL or ws://127.0.0.1:9944)").tag(
        config=True
    )
    storage = Unicode(help="IPFS RPC endpoint (default: $DFML_STORAGE)").tag(config=True)
    key = Unicode(help="key that signs the panel's votes (default: $DFML_KEY); never shown").tag(
        config=True
    )

    @default("url")
    def _url(self) -> str:
        return config.default_url()

    @default("storage")
    def _storage(self) -> str:
        return config.default_storage()

    @default("key")
    def _key(self) -> str:
        return config.default_key()

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        # One thread: substrate-interface's type registry is process-wide and not thread-safe
        # (concurrent connections fail with 'Decoder class for "Compact<u32>" not found'), so
        # chain calls take turns off the event loop rather than run side by side.
        self.executor = ThreadPoolExecutor(1, thread_name_prefix="dfml")

    async def run(self, args: Sequence[str]) -> Any:
        """Run one verb (`["account", "list"]`) in the pool; its plain data, or DfmlError."""
        from .. import cli

        argv = ["--url", self.url, "--storage", self.storage, "--key", self.key, *args]
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.executor, cli.run, argv)


def status_code(err: DfmlError) -> int:
    """The HTTP status that says whose fault a DfmlError is: the request's, or the services'."""
    if isinstance(err, NotFound):
        return 404
    if isinstance(err, UsageError | KeyLoadError):
        return 400
    if isinstance(err, TransactionRejected | DispatchFailed):
        return 409
    if isinstance(err, ChainNotReachable | StorageError):
        return 503
    from ..protocol.client import ProtocolRejected

    if isinstance(err, ProtocolRejected):
        return 409
    return 500


class DFMLHandler(APIHandler):
    """Base handler: runs verbs and answers JSON, DfmlErrors as {"error", "hint"}."""

    @property
    def dfml(self) -> DFMLServer:
        return self.settings["dfml"]

    async def answer(self, *args: str) -> None:
        try:
            result = await self.dfml.run(args)
        except KeyLoadError as err:  # the server's own key, not the request: its operator's fix
            hint = "set the server's signing key: c.DFMLServer.key (a dev URI or a key file)"
            self.fail(500, {"error": f"the server's signing key: {err}", "hint": hint})
            return
        except DfmlError as err:
            self.fail(status_code(err), err.to_json())
            return
        except Exception as exc:  # a bug, not the user's: log it, still answer in the contract
            self.log.exception("decentralml: %s failed", " ".join(args[:2]))
            self.fail(500, {"error": f"{type(exc).__name__}: {exc}", "hint": "see the server log"})
            return
        self.finish(json.dumps(result))

    def fail(self, code: int, body: dict[str, str]) -> None:
        self.set_status(code)
        self.finish(json.dumps(body))


class StatusHandler(DFMLHandler):
    @tornado.web.authenticated
    async def get(self) -> None:
        try:
            chain, storage = await asyncio.gather(
                self.dfml.run(["chain", "status"]), self.dfml.run(["storage", "status"])
            )
        except DfmlError as err:
            self.fail(status_code(err), err.to_json())
            return
        self.finish(json.dumps({"chain": chain, "storage": storage}))


class AccountsHandler(DFMLHandler):
    @tornado.web.authenticated
    async def get(self) -> None:
        await self.answer("account", "list")


class ModelsHandler(DFMLHandler):
    @tornado.web.authenticated
    async def get(self) -> None:
        await self.answer("model", "list")


class ProposalsHandler(DFMLHandler):
    @tornado.web.authenticated
    async def get(self) -> None:
        only_open = self.get_query_argument("open", "") not in ("", "0", "false")
        await self.answer("proposals", *(["--open"] if only_open else []))


class VoteHandler(DFMLHandler):
    @tornado.web.authenticated
    async def post(self, proposal: str) -> None:
        try:
            body = json.loads(self.request.body or b"{}")
        except ValueError:
            body = None
        choice = body.get("choice") if isinstance(body, dict) else None
        if choice not in ("aye", "nay"):
            self.fail(
                400,
                {
                    "error": f"choice must be 'aye' or 'nay', got {choice!r}",
                    "hint": 'POST a JSON body like {"choice": "aye"}',
                },
            )
            return
        await self.answer("vote", proposal, choice)


MAX_ROUNDS = 1000  # rounds one panel request may list


class RoundsHandler(DFMLHandler):
    """The most recent rounds over every model (or one, `?model=ID`), newest first."""

    @tornado.web.authenticated
    async def get(self) -> None:
        try:
            limit = int(self.get_query_argument("limit", "10"))
        except ValueError:
            limit = -1
        if not 0 <= limit <= MAX_ROUNDS:  # a negative slice would silently drop rows
            self.fail(
                400,
                {"error": f"limit must be an integer in 0..{MAX_ROUNDS}", "hint": "e.g. ?limit=10"},
            )
            return
        model = self.get_query_argument("model", None)
        try:
            models = (
                [model] if model else [str(m["id"]) for m in await self.dfml.run(["model", "list"])]
            )
            rounds = [r for m in models for r in await self.dfml.run(["round", "history", m])]
        except DfmlError as err:
            self.fail(status_code(err), err.to_json())
            return
        rounds.sort(key=lambda r: r["round_id"], reverse=True)
        self.finish(json.dumps(rounds[:limit]))


def _handlers(base_url: str) -> list[tuple[str, type[DFMLHandler]]]:
    def route(path: str) -> str:
        return url_path_join(base_url, ROUTE, path)

    return [
        (route("status"), StatusHandler),
        (route("accounts"), AccountsHandler),
        (route("models"), ModelsHandler),
        (route("proposals"), ProposalsHandler),
        (route(r"proposals/(\d+)/vote"), VoteHandler),
        (route("rounds"), RoundsHandler),
    ]


def _load_jupyter_server_extension(serverapp) -> None:
    """Called by jupyter_server at start-up: add the handlers, configured from its config."""
    dfml = DFMLServer(parent=serverapp)
    web_app = serverapp.web_app
    web_app.settings["dfml"] = dfml
    web_app.add_handlers(".*$", _handlers(web_app.settings["base_url"]))
    serverapp.log.info(
        "decentralml: REST API at %s%s/ (chain %s)", web_app.settings["base_url"], ROUTE, dfml.url
    )
