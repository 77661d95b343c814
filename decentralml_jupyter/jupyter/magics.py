"""`%dfml VERB ...` and `%%dfml VERB` (YAML options in the cell): the CLI's verbs in a notebook.

The magic holds one `Session` per kernel, built from `%config DFMLMagics...` (and rebuilt when
that changes), so a kernel keeps one chain connection and one indexed protocol state. A line
(and cell) is parsed by the CLI's own parser and run on that Session; Python objects of the
kernel pass straight through (`%dfml model submit my_model` takes the Keras model itself).
Results come back as `Record`/`Records` that render as tables.
"""

from __future__ import annotations

import functools
import sys
from typing import TYPE_CHECKING, Any

from IPython.core.error import UsageError as IPythonUsageError
from IPython.core.magic import Magics, line_cell_magic, magics_class
from traitlets import Bool, Integer, Unicode, default, observe, validate

from .. import config
from ..errors import DfmlError, UsageError
from . import results
from .commands import Command, cell_options, parse, positional_indexes, split_line

if TYPE_CHECKING:
    from ..session import Session

PROG = "%dfml"


class Secret(str):
    """A key that works as the text it is but never shows itself (repr, %config, displays)."""

    def __repr__(self) -> str:
        return "'<hidden>'"

    def _repr_pretty_(self, p, cycle) -> None:
        p.text(repr(self))


def _render(err: DfmlError) -> list[str]:
    lines = [f"\x1b[1;31m{type(err).__name__}\x1b[0m: {err}"]
    if err.hint:
        lines.append(f"\x1b[1mhint\x1b[0m: {err.hint}")
    return lines


def is_keras_model(obj: Any) -> bool:
    # Only a model the user already built can be one, so Keras is never imported here.
    keras = sys.modules.get("keras")
    return keras is not None and isinstance(obj, keras.Model)


@magics_class
class DFMLMagics(Magics):
    """The `%dfml` magics; configure with `%config DFMLMagics.url = "ws://..."`."""

    url = Unicode(help="chain endpoint (default: $DFML_URL or ws://127.0.0.1:9944)").tag(
        config=True
    )
    storage = Unicode(help="IPFS RPC endpoint (default: $DFML_STORAGE)").tag(config=True)
    key = Unicode(
        help="signing key: dev URI (//Alice), mnemonic or key file (default: $DFML_KEY); hidden"
    ).tag(config=True)
    from_block = Integer(
        None,
        allow_none=True,
        help="the protocol's first block on this chain: nothing before it is read or applied "
        "(default: $DFML_FROM_BLOCK, or genesis)",
    ).tag(config=True)
    progress = Bool(True, help="show a progress bar for long work (installs, uploads)").tag(
        config=True
    )
    json_display = Bool(
        False,
        help="also publish results as application/json (JupyterLab then shows a JSON tree)",
    ).tag(config=True)

    @default("url")
    def _url_default(self) -> str:
        return config.default_url()

    @default("storage")
    def _storage_default(self) -> str:
        return config.default_storage()

    @default("key")
    def _key_default(self) -> str:
        return Secret(config.default_key())

    @default("from_block")
    def _from_block_default(self) -> int | None:
        return config.default_from_block()

    @validate("from_block")
    def _check_from_block(self, proposal) -> int | None:
        return config.parse_from_block(proposal["value"], "DFMLMagics.from_block")

    @validate("key")
    def _hide_key(self, proposal) -> str:
        return Secret(proposal["value"])

    @observe("json_display")
    def _json_display_changed(self, change) -> None:
        results.JSON_DISPLAY = change["new"]

    @observe("url", "storage", "key", "from_block")
    def _endpoints_changed(self, change) -> None:
        session, self._session = getattr(self, "_session", None), None
        if session is not None:
            session.close()

    @property
    def session(self) -> Session:
        """The kernel's Session (made on first use from the current `%config`)."""
        session = getattr(self, "_session", None)
        if session is None:
            from ..session import Session

            session = Session(
                self.url, self.storage, str.__str__(self.key), from_block=self._first_block()
            )
            self._session = session
        return session

    def _token(self, result: Any) -> Any:
        """The chain's token, to show a result's amounts in (None when it holds none, or the
        chain cannot say)."""
        if not results.has_amounts(result):
            return None
        try:
            return self.session.token()
        except DfmlError:
            return None

    def _parser(self):
        from .. import cli

        defaults = {
            "url": self.url,
            "storage": self.storage,
            "key": str.__str__(self.key),
            "from_block": self._first_block(),
        }
        return cli.parser_for(PROG, defaults)

    def _first_block(self) -> int:
        """The configured first block; 0 (genesis) for None, so that a Session does not read
        DFML_FROM_BLOCK again behind `%config`."""
        return 0 if self.from_block is None else self.from_block

    # -- the magic ------------------------------------------------------------------------------

    @line_cell_magic
    def dfml(self, line: str, cell: str | None = None) -> Any:
        """Run a `dfml` verb: `%dfml account list`, `%dfml -o r chain status`.

        With `%%dfml VERB`, the cell is a YAML mapping of options: `name: x` gives `--name x`,
        lists repeat the option, `true` gives a flag, and `params: {k: v}` gives `--param k=v`.
        `-o NAME` also stores the result in NAME. See `%dfml --help` and `%dfml VERB --help`.
        """
        parser = self._parser()
        try:
            cmd = parse(parser, split_line(line))
            if cell is not None:
                cmd.argv += cell_options(_cell_mapping(cell), cmd.parser)
        except UsageError as err:
            raise _usage(err) from None
        if not cmd.argv:
            parser.print_help()
            return None
        result = self._run(cmd, self._objects(cmd))
        if result is _HELP:
            return None
        value = results.wrap(result, self._token(result))
        if cmd.out:
            self.shell.user_ns[cmd.out] = value
        return value

    def _run(self, cmd: Command, bind: dict[str, Any]) -> Any:
        from .. import cli

        progress = None
        if self.progress:
            from .progress import Progress, in_kernel

            if in_kernel():
                progress = Progress(title=" ".join(cmd.path))
        try:
            result = cli.run(
                cmd.argv,
                PROG,
                session=self.session,
                progress=progress if progress is not None else cli._stderr_progress,
                bind=bind,
            )
        except SystemExit as exit_:
            # argparse exits after printing --help or --version: the help is the result
            if exit_.code in (0, None):
                return _HELP
            raise IPythonUsageError(f"%dfml: exit status {exit_.code}") from None
        except UsageError as err:
            raise _usage(err) from None
        except DfmlError as err:
            if progress is not None:
                progress.done(ok=False, message=str(err))
            # IPython shows `_render_traceback_` instead of a traceback; the exception keeps its
            # type, so `except ChainNotReachable` still works around a magic call
            err._render_traceback_ = functools.partial(_render, err)
            raise
        if progress is not None:
            progress.done()
        return result

    def _objects(self, cmd: Command) -> dict[str, Any]:
        """Python objects of the kernel the verb takes as they are: `model submit my_model`
        passes the Keras model (named after its variable unless --name is given), `worker
        join MODEL --data df` the DataFrame (or arrays, or tf.data.Dataset) itself."""
        if cmd.path in (["worker"], ["validator"]):
            for i, tok in enumerate(cmd.argv[:-1]):
                name = cmd.argv[i + 1]
                if tok == "--data" and name.isidentifier() and name in self.shell.user_ns:
                    return {"join_data": self.shell.user_ns[name]}
            return {}
        if cmd.path != ["model", "submit"]:
            return {}
        indexes = positional_indexes(cmd)
        if not indexes:
            return {}
        name = cmd.argv[indexes[0]]
        obj = self.shell.user_ns.get(name) if name.isidentifier() else None
        if obj is None or not is_keras_model(obj):
            return {}
        bind = {"path": obj}
        if not any(a == "--name" or a.startswith("--name=") for a in cmd.argv):
            bind["name"] = name
        return bind


_HELP = object()


def _usage(err: UsageError) -> IPythonUsageError:
    # IPython prints a UsageError as one short message without a traceback: the fix goes in it
    hint = f"\nhint: {err.hint}" if err.hint else ""
    return IPythonUsageError(f"{err}{hint}")


def _cell_mapping(cell: str) -> dict:
    import yaml

    try:
        body = yaml.safe_load(cell)
    except yaml.YAMLError as err:
        raise UsageError(
            f"%%dfml: the cell is not valid YAML: {err}", hint="write one `option: value` per line"
        ) from None
    if body is None:
        return {}
    if not isinstance(body, dict):
        raise UsageError(
            f"%%dfml: the cell must be a YAML mapping of options, not a {type(body).__name__}",
            hint="write one `option: value` per line",
        )
    return body
