"""Jupyter server extension: the REST API under `<base_url>/decentralml/` read by the side panel.

The extension keeps one `Session` in the server's settings (one chain connection, one indexed
protocol state, the configured key never leaving the process), and each handler is one call on
it, rendered as the CLI renders it (addresses in the chain's SS58 format; amounts as decimal
strings, `amounts_as_text`), so the panel, the CLI and the magics share one implementation.
Calls block on the chain, so they run in a worker thread, never on the loop. An error answers
``{"error", "hint"}`` with the HTTP status its class carries (`errors.DfmlError.http_status`).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import tornado.web
from jupyter_server.base.handlers import APIHandler
from jupyter_server.utils import url_path_join
from traitlets import Integer, Unicode, default, validate
from traitlets.config import Configurable

from .. import config
from ..errors import DfmlError, KeyLoadError

if TYPE_CHECKING:
    from ..session import Session

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
    from_block = Integer(
        None,
        allow_none=True,
        help="the protocol's first block on this chain: nothing before it is read or applied "
        "(default: $DFML_FROM_BLOCK, or genesis)",
    ).tag(config=True)

    @default("url")
    def _url(self) -> str:
        return config.default_url()

    @default("storage")
    def _storage(self) -> str:
        return config.default_storage()

    @default("key")
    def _key(self) -> str:
        return config.default_key()

    @default("from_block")
    def _from_block(self) -> int | None:
        return config.default_from_block()

    @validate("from_block")
    def _check_from_block(self, proposal) -> int | None:
        return config.parse_from_block(proposal["value"], "DFMLServer.from_block")

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        # One thread: the session's chain connection serves one request at a time anyway
        # (substrate-interface's websocket is request/reply under one lock), and reads are
        # answered from memory, so requests queue briefly instead of racing.
        self.executor = ThreadPoolExecutor(1, thread_name_prefix="dfml")
        self._session: Session | None = None

    @property
    def session(self) -> Session:
        if self._session is None:
            from ..session import Session

            first = 0 if self.from_block is None else self.from_block  # None: genesis
            self._session = Session(self.url, self.storage, self.key, from_block=first)
        return self._session

    async def call(self, fn: Callable[[Session], Any]) -> Any:
        """Run ``fn(session)`` in the worker thread; its result as the CLI's plain data (its
        addresses in the chain's SS58 format), with amounts as decimal strings."""
        from ..cli import shown

        def work() -> Any:
            return amounts_as_text(shown(fn(self.session), self.session))

        return await asyncio.get_running_loop().run_in_executor(self.executor, work)

    def close(self) -> None:
        if self._session is not None:
            self.executor.submit(self._session.close).result(timeout=10)
            self._session = None
        self.executor.shutdown(wait=False)


ACCOUNT_KEY = 40  # characters: a key at least this long is an address (SS58: 46 to 48)


def amounts_as_text(data: Any, amount: bool = False) -> Any:
    """``data`` with every amount as its decimal string: a field of `results.AMOUNT_KEYS`, or
    the value of an account in such a field's map (rewards by address). u128 balances exceed
    what a JavaScript number holds exactly (2^53), and the panel reads them as BigInts. The
    CLI's JSON keeps integers; this is the REST API's one difference from it."""
    from .results import AMOUNT_KEYS

    if isinstance(data, dict):
        return {
            k: amounts_as_text(v, k in AMOUNT_KEYS or (amount and len(str(k)) >= ACCOUNT_KEY))
            for k, v in data.items()
        }
    if isinstance(data, list | tuple):
        return [amounts_as_text(v) for v in data]
    if amount and isinstance(data, int) and not isinstance(data, bool):
        return str(data)
    return data


def status_code(err: DfmlError) -> int:
    """The HTTP status that says whose fault a DfmlError is: the request's, or the services'."""
    return err.http_status


class DFMLHandler(APIHandler):
    """Base handler: one Session call per request, answered as JSON; a DfmlError as
    {"error", "hint"} with its class's status."""

    @property
    def dfml(self) -> DFMLServer:
        return self.settings["dfml"]

    async def answer(self, fn: Callable[[Session], Any]) -> None:
        try:
            result = await self.dfml.call(fn)
        except KeyLoadError as err:  # the server's own key, not the request: its operator's fix
            hint = "set the server's signing key: c.DFMLServer.key (a dev URI or a key file)"
            self.fail(500, {"error": f"the server's signing key: {err}", "hint": hint})
            return
        except DfmlError as err:
            self.fail(status_code(err), err.to_json())
            return
        except Exception as exc:  # a bug, not the user's: log it, still answer in the contract
            self.log.exception("decentralml: %s failed", self.request.path)
            self.fail(500, {"error": f"{type(exc).__name__}: {exc}", "hint": "see the server log"})
            return
        self.finish(json.dumps(result))

    def fail(self, code: int, body: dict[str, str]) -> None:
        self.set_status(code)
        self.finish(json.dumps(body))


class StatusHandler(DFMLHandler):
    @tornado.web.authenticated
    async def get(self) -> None:
        await self.answer(
            lambda s: {"chain": s.chain_status(), "storage": s.storage_status(), "token": _token(s)}
        )


def _token(session: Session) -> dict | None:
    """The chain's token (symbol, decimals) for the panel to show amounts in; None while no
    chain answers."""
    try:
        token = session.token()
    except DfmlError:
        return None
    return {"symbol": token["symbol"], "decimals": token["decimals"]}


class AccountsHandler(DFMLHandler):
    @tornado.web.authenticated
    async def get(self) -> None:
        await self.answer(lambda s: s.accounts())


class ModelsHandler(DFMLHandler):
    @tornado.web.authenticated
    async def get(self) -> None:
        await self.answer(lambda s: s.models())


class ProposalsHandler(DFMLHandler):
    @tornado.web.authenticated
    async def get(self) -> None:
        only_open = self.get_query_argument("open", "") not in ("", "0", "false")
        await self.answer(lambda s: s.proposals(open_only=only_open))


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
        await self.answer(lambda s: s.vote(int(proposal), choice == "aye"))


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
            model_id = None if model is None else int(model)
        except ValueError:
            model_id = 0
        if model_id is not None and model_id <= 0:
            self.fail(
                400, {"error": f"model must be a model id, got {model!r}", "hint": "?model=1"}
            )
            return
        await self.answer(lambda s: _recent_rounds(s, model_id, limit))


def _recent_rounds(session: Session, model_id: int | None, limit: int) -> list[dict]:
    """The newest ``limit`` rounds (of one model, or of all), newest first, as `round status`
    shows them: one read of the session's state."""
    from ..cli import round_json

    rounds = session.rounds() if model_id is None else session.round_history(model_id)
    newest = sorted(rounds, key=lambda r: r.round_id, reverse=True)[:limit]
    return [round_json(r) for r in newest]


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


def _unload_jupyter_server_extension(serverapp) -> None:
    """Called by jupyter_server at shutdown: close the extension's Session."""
    dfml = serverapp.web_app.settings.get("dfml")
    if dfml is not None:
        dfml.close()
