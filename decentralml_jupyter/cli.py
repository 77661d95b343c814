"""`dfml`: the command line. One parser and one implementation per verb, shared with `%dfml`.

`run(argv)` parses and executes a verb and returns its result as plain data (the JSON of
CLI.md); `main()` prints it. Failures raise DfmlError, printed as {"error", "hint"}.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from urllib.parse import urlparse

from . import __version__, config
from .errors import DfmlError, UsageError


class _Parser(argparse.ArgumentParser):
    """argparse that raises UsageError instead of exiting, so the magic can report it too."""

    def error(self, message: str):
        raise UsageError(f"{self.prog}: {message}", hint=f"see: {self.prog} --help")


def _port_of(url: str) -> int:
    return urlparse(url).port or 9944


def _progress(msg: str) -> None:
    print(f"[dfml] {msg}", file=sys.stderr, flush=True)


def _chain(args):
    from .chain import Chain

    return Chain(args.url)


# -- chain ------------------------------------------------------------------------------------


def cmd_chain_install(args):
    from .chain import devchain

    inst = devchain.install(progress=_progress)
    return {"path": str(inst.root), "genesis": str(inst.genesis), "persistence": inst.sqlite}


def cmd_chain_up(args):
    from .chain import devchain

    port = args.port if args.port is not None else _port_of(args.url)
    return devchain.up(
        port=port,
        base_path=args.base_path,
        accounts=args.accounts,
        block_mode=args.block_mode,
        progress=_progress,
    )


def cmd_chain_status(args):
    from .chain import devchain

    return devchain.status(args.url)


def cmd_chain_down(args):
    from .chain import devchain

    return devchain.down(_port_of(args.url))


# -- accounts ---------------------------------------------------------------------------------


def cmd_account_list(args):
    from .chain import devchain

    chain = _chain(args)
    with chain:
        if not chain.is_dev:
            raise UsageError(
                "account list shows the dev accounts of a dev chain; this chain is not one",
                hint="use: dfml account balance ADDRESS",
            )
        record = devchain.running_record(_port_of(args.url)) or {}
        out = []
        for name, _uri in devchain.dev_accounts(record.get("accounts", 0)):
            bal = chain.balance(name)
            out.append({"name": name, **bal.to_json()})
        return out


def cmd_account_balance(args):
    with _chain(args) as chain:
        return chain.balance(args.who).to_json()


def cmd_account_transfer(args):
    with _chain(args) as chain:
        receipt = chain.transfer(args.key, args.to, args.amount)
        return {"receipt": receipt.to_json(), "fee": receipt.fee}


def cmd_remark(args):
    data = args.text.encode() if args.hex is None else bytes.fromhex(args.hex.removeprefix("0x"))
    with _chain(args) as chain:
        receipt = chain.remark(args.key, data)
        return {"receipt": receipt.to_json(), "fee": receipt.fee}


# -- parser -----------------------------------------------------------------------------------


def _amount(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an integer amount (in the chain's smallest unit)"
        ) from None
    if value <= 0:
        raise argparse.ArgumentTypeError("the amount must be positive")
    return value


def _add(sub, name: str, func: Callable, help: str, **kw) -> argparse.ArgumentParser:
    p = sub.add_parser(name, help=help, description=help, **kw)
    p.set_defaults(func=func)
    return p


def build_parser(prog: str = "dfml") -> argparse.ArgumentParser:
    parser = _Parser(
        prog=prog,
        description="DecentralML: federated learning governed on a Substrate chain.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--url", default=config.default_url(), help="chain endpoint (DFML_URL)")
    parser.add_argument(
        "--storage", default=config.default_storage(), help="IPFS RPC endpoint (DFML_STORAGE)"
    )
    parser.add_argument(
        "--key",
        default=config.default_key(),
        help="signing key: dev URI (//Alice), mnemonic or key file (DFML_KEY); never printed",
    )
    parser.add_argument("--json", action="store_true", help="print exactly one JSON document")
    verbs = parser.add_subparsers(dest="verb", metavar="VERB", parser_class=_Parser)

    chain = verbs.add_parser("chain", help="the local dev chain (Chopsticks)")
    chain_sub = chain.add_subparsers(dest="action", metavar="ACTION", parser_class=_Parser)
    up = _add(chain_sub, "up", cmd_chain_up, "start the dev chain on 127.0.0.1")
    up.add_argument("--port", type=int, default=None, help="port (default: that of --url)")
    up.add_argument("--base-path", default=None, help="keep the chain's state here across restarts")
    up.add_argument("--accounts", type=int, default=0, help="fund N more dev accounts Dev1..DevN")
    up.add_argument("--block-mode", choices=["instant", "batch", "manual"], default="instant")
    _add(chain_sub, "status", cmd_chain_status, "endpoint, block height and runtime")
    _add(chain_sub, "down", cmd_chain_down, "stop the dev chain started by chain up")
    _add(chain_sub, "install", cmd_chain_install, "install the dev chain's npm packages now")

    account = verbs.add_parser("account", help="accounts and balances")
    account_sub = account.add_subparsers(dest="action", metavar="ACTION", parser_class=_Parser)
    _add(account_sub, "list", cmd_account_list, "the dev accounts and their balances")
    bal = _add(account_sub, "balance", cmd_account_balance, "free and reserved balance")
    bal.add_argument("who", help="address, dev name (Alice, Dev3) or key")
    tr = _add(account_sub, "transfer", cmd_account_transfer, "transfer from --key to TO")
    tr.add_argument("to", help="address or dev name")
    tr.add_argument("amount", type=_amount, help="amount in the smallest unit")

    remark = _add(verbs, "remark", cmd_remark, "put a System.remark_with_event on chain")
    remark.add_argument("text", nargs="?", default="", help="text to record")
    remark.add_argument("--hex", default=None, help="record these bytes instead (hex)")
    return parser


def run(argv: Sequence[str], prog: str = "dfml"):
    """Parse ``argv`` and run the verb; return its result (plain data)."""
    parser = build_parser(prog)
    args = parser.parse_args(list(argv))
    func = getattr(args, "func", None)
    if func is None:
        sub = [a for a in argv if not a.startswith("-")][:1]
        raise UsageError(
            f"{prog} {' '.join(sub)}: missing verb".replace("  ", " "),
            hint=f"see: {prog} {' '.join(sub)} --help".replace("  ", " "),
        )
    return func(args)


def _human(result) -> str:
    import yaml

    return yaml.safe_dump(result, sort_keys=False, default_flow_style=False).rstrip()


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    as_json = "--json" in argv
    try:
        result = run(argv)
    except DfmlError as err:
        if as_json:
            print(json.dumps(err.to_json()))
        else:
            print(f"error: {err}", file=sys.stderr)
            if err.hint:
                print(f"hint: {err.hint}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    print(json.dumps(result) if as_json else _human(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
