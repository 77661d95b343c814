"""`dfml`: the command line: the parser, the dispatch of each verb to a `Session` method, and
the rendering of its typed result as the JSON of CLI.md.

`execute(argv)` parses a line and returns the verb's typed result; `run(argv)` its plain data;
`main()` prints it. `%dfml` parses with the same parser and runs on the kernel's Session.
Failures raise DfmlError, printed as {"error", "hint"}.
"""

from __future__ import annotations

import argparse
import functools
import json
import re
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from . import __version__, config
from .errors import DfmlError, UsageError
from .fl.types import DEFAULT_LOCAL_EPOCHS

if TYPE_CHECKING:
    from .session import Progress, Session


class _Parser(argparse.ArgumentParser):
    """argparse that raises UsageError instead of exiting, so the magic can report it too, and
    that keeps the map of its verbs (``verbs``), its arguments in order (``arguments``) and its
    options by flag (``options``) for the magic and the docs to read, so nothing outside needs
    argparse's private attributes."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.verbs: dict[str, _Parser] = {}
        self.arguments: list[argparse.Action] = []
        self.options: dict[str, argparse.Action] = {}
        super().__init__(*args, **kwargs)

    def error(self, message: str):
        raise UsageError(f"{self.prog}: {message}", hint=f"see: {self.prog} --help")

    def add_argument(self, *args: Any, **kwargs: Any) -> argparse.Action:
        action = super().add_argument(*args, **kwargs)
        self.arguments.append(action)
        for flag in action.option_strings:
            self.options[flag] = action
        return action

    def add_subparsers(self, **kwargs: Any):
        kwargs.setdefault("parser_class", _Parser)
        group = super().add_subparsers(**kwargs)
        add_parser = group.add_parser

        def add(name: str, **kw: Any) -> _Parser:
            parser = add_parser(name, **kw)
            self.verbs[name] = parser
            return parser

        group.add_parser = add  # type: ignore[method-assign]
        return group


def _stderr_progress(msg: str, fraction: float | None = None) -> None:
    print(f"[dfml] {msg}", file=sys.stderr, flush=True)


# Each verb is one function ``(session, args, progress) -> result``: a Session call, and the
# shaping of its typed result into the verb's JSON where CLI.md asks for more than to_json().

# -- chain ------------------------------------------------------------------------------------


def cmd_chain_install(s: Session, args, progress):
    return s.chain_install(progress=progress)


def cmd_chain_up(s: Session, args, progress):
    return s.chain_up(
        port=args.port,
        base_path=args.base_path,
        accounts=args.accounts,
        block_mode=args.block_mode,
        progress=progress,
    )


def cmd_chain_status(s: Session, args, progress):
    return s.chain_status()


def cmd_chain_down(s: Session, args, progress):
    return s.chain_down()


def cmd_chain_advance(s: Session, args, progress):
    return {"block": s.advance(args.blocks)}


# -- accounts ---------------------------------------------------------------------------------


def cmd_account_list(s: Session, args, progress):
    return s.accounts()


def cmd_account_balance(s: Session, args, progress):
    return s.balance(args.who)


def cmd_account_transfer(s: Session, args, progress):
    return s.transfer(args.to, args.amount)


def cmd_remark(s: Session, args, progress):
    data = args.text.encode() if args.hex is None else bytes.fromhex(args.hex.removeprefix("0x"))
    return s.remark(data)


# -- storage ----------------------------------------------------------------------------------


def cmd_storage_up(s: Session, args, progress):
    return s.storage_up(port=args.port, repo=args.repo)


def cmd_storage_status(s: Session, args, progress):
    return s.storage_status()


def cmd_storage_down(s: Session, args, progress):
    return s.storage_down()


def cmd_storage_put(s: Session, args, progress):
    return s.put_file(args.file, progress=progress)


def cmd_storage_get(s: Session, args, progress):
    return s.get_file(args.cid, args.out)


# -- models -----------------------------------------------------------------------------------


def _model_id(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a model id (an integer)") from None
    if value <= 0:
        raise argparse.ArgumentTypeError("ids start at 1")
    return value


def cmd_model_submit(s: Session, args, progress):
    return s.submit_model(
        args.path,  # a path; the magic passes a Keras model of the kernel straight through
        name=args.name,
        description=args.description,
        metric=args.metric,
        strategy=args.strategy,
        strategy_params=_key_values(args.strategy_param, "--strategy-param", "f=1"),
        license=args.license,
        jurisdictions=args.jurisdiction,
        validators=args.validator,
        stake_asset=args.stake_asset,
        reward_policy=args.reward_policy,
        round_reward=args.round_reward,
        slash_permill=args.slash_permill,
        improvement_tolerance=args.improvement_tolerance,
        unimproved=args.unimproved,
        label=args.label,
        features=args.feature,
        deposit=args.deposit,
    )


def cmd_model_list(s: Session, args, progress):
    return s.models()


def cmd_model_show(s: Session, args, progress):
    from .errors import StorageError

    out = s.model(args.id).to_json()
    try:
        out.update(s.model_setup(args.id))
    except StorageError as err:  # the chain's record still shows; its artefact cannot now
        out.update(data=None, training=None, setup_error=str(err))
    return out


def cmd_model_start(s: Session, args, progress):
    return s.start_training(args.id)


def cmd_model_fetch(s: Session, args, progress):
    return s.save_model(args.id, args.out, args.round)


def cmd_model_predict(s: Session, args, progress):
    import numpy as np

    try:
        x = np.load(args.input, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise UsageError(
            f"cannot read {args.input} as a .npy array: {exc}", hint="save inputs with np.save"
        ) from None
    return s.predict(args.id, x)


# -- stakes, governance, pools ----------------------------------------------------------------


def cmd_stake(s: Session, args, progress):
    return s.stake(args.model, args.amount, args.asset)


def cmd_unstake(s: Session, args, progress):
    return s.unstake(args.model, args.amount)


def cmd_stakes(s: Session, args, progress):
    return s.stakes(model_id=args.model, account=args.account)


def cmd_reputation(s: Session, args, progress):
    return s.reputation(model_id=args.model, account=args.account)


def _key_values(items: list[str], option: str, example: str) -> dict[str, str]:
    """``K=V`` option values as a dict; a malformed one is a usage error."""
    out = {}
    for item in items:
        if "=" not in item:
            raise UsageError(f"{option} {item!r} is not K=V", hint=f"e.g. {option} {example}")
        k, v = item.split("=", 1)
        out[k.strip()] = v.strip()
    return out


def cmd_propose(s: Session, args, progress):
    params = _key_values(args.param, "--param", "account=Dev1")
    target = None if args.target == "protocol" else _model_id(args.target)
    return s.propose(target, args.kind, params, deadline=args.deadline)


def cmd_vote(s: Session, args, progress):
    return s.vote(args.proposal, args.choice == "aye")


def cmd_proposals(s: Session, args, progress):
    return s.proposals(open_only=args.open)


def cmd_errors(s: Session, args, progress):
    return s.errors(account=args.account)


def cmd_payouts(s: Session, args, progress):
    return s.payouts(pending=args.pending)


def cmd_pools(s: Session, args, progress):
    return s.pools()


def cmd_payout_approve(s: Session, args, progress):
    return s.approve_payout(args.id)


# -- tasks ------------------------------------------------------------------------------------


def cmd_task_create(s: Session, args, progress):
    return s.create_task(
        args.model,
        args.type,
        args.reward,
        max_assignments=args.max_assignments,
        duration=args.duration,
        validation=args.validation,
        description=args.description,
    )


def cmd_task_list(s: Session, args, progress):
    return s.tasks(model_id=args.model)


def cmd_task_submissions(s: Session, args, progress):
    return s.submissions(task_id=args.task)


def cmd_task_assign(s: Session, args, progress):
    return s.assign_task(args.id)


def cmd_task_submit(s: Session, args, progress):
    return s.submit_result(args.id, args.result)


def cmd_task_accept(s: Session, args, progress):
    return s.accept_submission(args.submission)


def cmd_task_reject(s: Session, args, progress):
    return s.reject_submission(args.submission, args.reason)


# -- rounds -----------------------------------------------------------------------------------


def cmd_round_start(s: Session, args, progress):
    return s.start_rounds(
        args.model,
        clients=args.clients,
        min_clients=args.min_clients,
        deadline=args.deadline,
        aggregate_deadline=args.aggregate_deadline,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        clip_norm=args.clip_norm,
        noise_multiplier=args.noise_multiplier,
        reward=args.reward,
        rounds=args.rounds,
        bounty=args.bounty,
        test_commitment=args.test_commitment,
    )


def cmd_round_commit(s: Session, args, progress):
    """Commit to a test set; its CID and salt go to a file only its owner can read."""
    import os
    from pathlib import Path

    made = s.commit_test_set(args.test_set, args.model)
    out = Path(args.out)
    if out.exists():
        raise UsageError(f"{out} exists", hint="give a new --out: it holds the salt to reveal")
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump({"cid": made.cid, "salt": made.salt, "commitment": made.commitment,
                   "test_set": str(Path(made.test_set).resolve())}, f)  # fmt: skip
    return {**made.to_json(), "saved": str(out)}


def cmd_round_reveal(s: Session, args, progress):
    from pathlib import Path

    cid, salt, test_set = args.test_cid, args.salt, args.test_set
    if args.commitment_file:
        saved = json.loads(Path(args.commitment_file).read_text())
        cid, salt = cid or saved["cid"], salt or saved["salt"]
        test_set = test_set or saved.get("test_set")
    return s.reveal_test_set(args.model, test_set=test_set, test_cid=cid, salt=salt)


def cmd_round_markets(s: Session, args, progress):
    return [m.to_json() for m in s.markets(args.model)]


def round_json(rnd) -> dict:
    """A round as `round status` shows it (CLI.md)."""
    keys = (
        "round_id",
        "model_id",
        "status",
        "selected",
        "submitted",
        "aggregate_cid",
        "metrics",
        "rewards",
        "slashes",
    )
    full = rnd.to_json()
    out = {k: full[k] for k in keys}
    out["deadlines"] = {"submit": rnd.submit_deadline, "aggregate": rnd.aggregate_deadline}
    out["start_block"], out["ended_block"] = rnd.start_block, rnd.ended_block
    out["number"], out["note"] = rnd.number, rnd.note
    out["rounds_left"] = rnd.rounds_left  # of its plan (round start --rounds), after it
    # whether it improved the model's metric over its base (None: not judged), its DP
    # settings with what one update spent (epsilon at delta), a stateful strategy's state
    out["improved"], out["dp"], out["state_cid"] = rnd.improved, rnd.dp, rnd.state_cid
    return out


def cmd_round_status(s: Session, args, progress):
    rnd = s.round(args.id)
    out = round_json(rnd)
    if rnd.status in ("finalized", "failed"):
        nxt = s.next_round(rnd)
        out["next_round_id"] = None if nxt is None else nxt.round_id
    return out


def cmd_round_watch(s: Session, args, progress):
    rnd, plan = s.watch_round(args.id, timeout=args.timeout, plan=args.plan, progress=progress)
    out = round_json(rnd)
    if args.plan:
        out["plan"] = [step.to_json() for step in plan]
    return out


def cmd_round_history(s: Session, args, progress):
    history = s.round_history(args.model)
    if args.csv:
        s.rounds_frame(args.model).to_csv(args.csv, index=False)
    return [round_json(r) for r in history]


# -- any protocol call, from its declaration -------------------------------------------------


def _call_value(s: Session, field, text: str):
    """A CLI string as the value of a call's field: JSON for structs and variants, a dev
    name or address for accounts, an integer or a flag word for numbers and booleans."""
    from .protocol import scale

    if isinstance(field, scale.Option):
        return None if text in ("", "none", "None") else _call_value(s, field.inner, text)
    if isinstance(field, scale.StructField | scale.Variant):
        try:
            data = json.loads(text)
        except ValueError as err:
            raise UsageError(f"{text!r} is not JSON: {err}", hint='e.g. {"clients": 4}') from None
        return field.from_json(data)
    if isinstance(field, scale.UInt):
        try:
            return int(text)
        except ValueError:
            raise UsageError(f"{text!r} is not an integer") from None
    if isinstance(field, scale.Bool):
        if text.lower() not in ("true", "false", "1", "0", "yes", "no"):
            raise UsageError(f"{text!r} is not true or false")
        return text.lower() in ("true", "1", "yes")
    if isinstance(field, scale.Account):
        return s._address(text)
    return text


def cmd_call(s: Session, args, progress):
    from .protocol import scale

    cls = args.call_class
    values = {}
    for name, field in cls.SCHEMA:
        given = getattr(args, name)
        if given is None:
            continue  # the declaration's default
        if isinstance(field, scale.Vec):
            values[name] = tuple(_call_value(s, field.inner, v) for v in given)
        else:
            values[name] = _call_value(s, field, given)
    try:
        call = cls(**values)
    except TypeError as err:  # a field without a default left out
        raise UsageError(f"{cls.NAME}: {err}", hint=f"see: dfml call {cls.NAME} --help") from None
    return s.send(call)


_EXTRINSIC_REF = re.compile(r"(\d+):(\d+)(?::(\d+))?")


def cmd_decode(s: Session, args, progress):
    where = _EXTRINSIC_REF.fullmatch(args.remark.strip())
    if where is None:
        return s.decode(args.remark)
    block, index, position = where.groups()
    return decode_extrinsic(s, int(block), int(index), None if position is None else int(position))


def decode_extrinsic(s: Session, block: int, index: int, position: int | None = None) -> dict:
    """The protocol remarks that executed in extrinsic ``index`` of block ``block``, decoded.

    One extrinsic may carry several (a `Utility.batch_all` of remarks, a proxy or multisig
    around a batch): ``calls`` lists them all in execution order, each with its ``signer`` (the
    origin the chain gave it) and ``batch_index``; the top-level ``call``, ``fields`` and
    ``signer`` are the first's, or the ``position``-th's (``BLOCK:EXTRINSIC:POSITION``). Only
    remarks that executed count, as for the protocol: a failed extrinsic carries none.
    """
    from .protocol.indexer import extract_values

    def read() -> tuple[str, list, list[dict]]:
        chain = s.chain
        head = chain.block_number()
        if not 0 <= block <= head:
            raise UsageError(
                f"block {block} is not on this chain (its head is #{head})",
                hint="give BLOCK:EXTRINSIC as an explorer shows it, e.g. 1234:2",
            )
        block_hash = chain.block_hash(block)
        return block_hash, chain.extrinsics(block_hash), chain.events(block_hash)

    block_hash, extrinsics, events = s._read(read)
    if not 0 <= index < len(extrinsics):
        raise UsageError(
            f"block {block} has {len(extrinsics)} extrinsics, no extrinsic {index}",
            hint="extrinsics count from 0, as explorers number them (BLOCK-INDEX)",
        )
    ran = [
        (ctx, raw)
        for x in extract_values(extrinsics, events, block, block_hash)
        if x.index == index
        for ctx, raw in x.calls
    ]
    if not ran:
        raise UsageError(
            f"extrinsic {block}:{index} executed no protocol remark",
            hint="a failed extrinsic changes nothing; decode a remark's bytes: dfml decode HEX",
        )
    calls = [
        {**s.decode(raw), "signer": ctx.signer, "batch_index": ctx.batch_index} for ctx, raw in ran
    ]
    if position is not None and not 0 <= position < len(calls):
        raise UsageError(
            f"extrinsic {block}:{index} executed {len(calls)} protocol remarks, "
            f"no remark {position}",
            hint=f"POSITION counts from 0: {block}:{index}:0 .. {block}:{index}:{len(calls) - 1}",
        )
    chosen = calls[position or 0]
    return {
        "call": chosen["call"],
        "fields": chosen["fields"],
        "signer": chosen["signer"],
        "block_number": block,
        "block_hash": block_hash,
        "extrinsic_index": index,
        "batch_index": chosen["batch_index"],
        "calls": calls,
    }


def _add_call_verbs(verbs) -> None:
    """``call NAME --FIELD VALUE ...``: every protocol call, its options read from its
    declaration in protocol.calls (a new call is a verb here with no code of its own)."""
    import dataclasses

    from .protocol import calls as C
    from .protocol import scale

    group = verbs.add_parser("call", help="send any protocol call, options from its declaration")
    sub = group.add_subparsers(dest="action", metavar="CALL", parser_class=_Parser)
    for cls in C.CALLS:
        doc = (cls.__doc__ or "").strip().split("\n")[0]
        p = _add(sub, cls.NAME, cmd_call, doc or f"the protocol's {cls.NAME} call")
        p.set_defaults(call_class=cls)
        defaults = {f.name: f.default for f in dataclasses.fields(cls)}
        for name, field in cls.SCHEMA:
            required = defaults[name] is dataclasses.MISSING
            help_text = cls.HELP.get(name, "")
            if isinstance(field, scale.StructField | scale.Variant):
                help_text += " (JSON)"
            if not required:
                help_text += f" (default: {scale._jsonable(defaults[name])!r})"
            p.add_argument(
                "--" + name.replace("_", "-"),
                dest=name,
                required=required,
                action="append" if isinstance(field, scale.Vec) else "store",
                default=None,
                help=help_text,
            )


# -- the dev network and agents ---------------------------------------------------------------


def cmd_devnet_up(s: Session, args, progress):
    return s.devnet_up(
        workers=args.workers,
        validators=args.validators,
        base_path=args.base_path,
        dataset=args.dataset,
        partition=args.partition,
        seed=args.seed,
        attackers=args.attackers,
        attack=args.attack,
        clock=args.clock,
        block_mode=args.block_mode,
        worker_processes=args.worker_processes,
        validator_processes=args.validator_processes,
        data=args.data,
        target=args.target,
        progress=progress,
    )


def cmd_devnet_status(s: Session, args, progress):
    return s.devnet_status()


def cmd_devnet_down(s: Session, args, progress):
    return s.devnet_down()


def cmd_agent(s: Session, args, progress):
    if args.agent_args and args.agent_args[0] in ("join", "status", "leave"):
        return _participant(s, args)
    s.run_agent(args.verb, args.agent_args)
    return {"stopped": True}


def _participant(s: Session, args):
    """``worker|validator join MODEL --data X [--target COL] [--stake AMOUNT]``, ``status``,
    ``leave [MODEL]``: a participant inside a notebook's kernel (see participants.py)."""
    role, action, rest = args.verb, args.agent_args[0], args.agent_args[1:]
    if args.prog != "%dfml" and action == "join":
        raise UsageError(
            f"{role} join runs a {role} inside a notebook's kernel, in the background",
            hint=f"in a shell, run one in the foreground: dfml {role} --data FILE --model ID",
        )
    p = _Parser(prog=f"{args.prog} {role} {action}", add_help=False)
    if action == "join":
        p.add_argument("model", type=_model_id)
        p.add_argument("--data", required=True, help="a variable of the kernel, or a path")
        p.add_argument("--target", default=None)
        if role == "worker":
            p.add_argument("--stake", type=_amount, default=None)
    elif action == "leave":
        p.add_argument("model", type=_model_id, nargs="?", default=None)
    else:
        p.add_argument("--model", type=_model_id, default=None)
    opts = p.parse_args(rest)
    if action == "join":
        data = getattr(args, "join_data", None)
        data = opts.data if data is None else data
        if role == "worker":
            return s.join_worker(opts.model, data, target=opts.target, stake=opts.stake)
        return s.join_validator(opts.model, data, target=opts.target)
    if action == "leave":
        return s.leave(role, opts.model)
    return [x.status() for x in s.participants(role, opts.model)]


# -- economics (in-process, no chain) --------------------------------------------------------


def _count(text: str) -> int:
    """How many workers or rounds, or a seed: a whole number, 0 or more."""
    if not text.strip().isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number (0 or more)")
    return int(text)


def cmd_economy_simulate(s: Session, args, progress):
    import dataclasses

    from . import economy

    defaults = dataclasses.asdict(economy.Economics())
    settings: dict[str, Any] = _key_values(args.set, "--set", "deposit=10")
    for name, text in settings.items():
        if name not in defaults:
            raise UsageError(f"--set {name}: no such setting", hint=f"one of {', '.join(defaults)}")
        try:
            settings[name] = type(defaults[name])(text)
        except ValueError:
            raise UsageError(
                f"--set {name}={text}: not a number", hint="e.g. --set wait=3"
            ) from None
    return economy.simulate(
        args.policy,
        args.honest,
        args.adversarial,
        args.free_riders,
        args.rounds,
        args.seed,
        lazy=args.lazy,
        noisy=args.noisy,
        kinds=[k.strip() for k in args.kinds.split(",") if k.strip()],
        economics=economy.Economics(**settings),
        rules=args.rules,
    )


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


def _from_block(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a block number") from None
    if value < 0:
        raise argparse.ArgumentTypeError("a block number is 0 or more")
    return value


def _add(sub, name: str, func: Callable, help: str, **kw) -> argparse.ArgumentParser:
    p = sub.add_parser(name, help=help, description=help, **kw)
    p.set_defaults(func=func)
    return p


def build_parser(prog: str = "dfml", defaults: dict[str, str] | None = None):
    """The parser of every verb; ``defaults`` overrides the endpoints' and key's defaults
    (the magic's `%config`). Choices and bounds come from the protocol's call declarations."""
    from .protocol import calls as C

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
        help="signing key: a dev URI (//Alice) or a key file; a mnemonic or seed only in a key "
        "file or DFML_KEY, never on the command line; never printed",
    )
    parser.add_argument(
        "--key-file",
        default=None,
        help="file holding the signing key (a mnemonic, a 0x seed or a polkadot-js JSON export); "
        "refused unless only its owner can read it (chmod 600)",
    )
    parser.add_argument(
        "--from-block",
        type=_from_block,
        default=config.default_from_block(),
        metavar="N",
        help="the protocol's first block on this chain: nothing before it is read or applied "
        "(DFML_FROM_BLOCK; default: genesis)",
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

    adv = _add(chain_sub, "advance", cmd_chain_advance, "build N empty blocks (dev chains)")
    adv.add_argument("blocks", type=int, nargs="?", default=1)

    storage = verbs.add_parser("storage", help="content-addressed storage (IPFS)")
    st_sub = storage.add_subparsers(dest="action", metavar="ACTION", parser_class=_Parser)
    st_up = _add(st_sub, "up", cmd_storage_up, "start the dev storage service (Kubo in-process)")
    st_up.add_argument("--port", type=int, default=None, help="port (default: that of --storage)")
    st_up.add_argument("--repo", default=None, help="the IPFS repository directory")
    _add(st_sub, "status", cmd_storage_status, "whether the storage service answers")
    _add(st_sub, "down", cmd_storage_down, "stop the dev storage service")
    put = _add(st_sub, "put", cmd_storage_put, "add a file; prints its CID")
    put.add_argument("file")
    get = _add(st_sub, "get", cmd_storage_get, "fetch a CID into a file, verified")
    get.add_argument("cid")
    get.add_argument("--out", required=True, help="file to write")

    model = verbs.add_parser("model", help="models: submit, list, show")
    m_sub = model.add_subparsers(dest="action", metavar="ACTION", parser_class=_Parser)
    sub = _add(m_sub, "submit", cmd_model_submit, "register a Keras model (.keras file)")
    sub.add_argument("path", help="a saved Keras model (.keras)")
    sub.add_argument("--name", default=None, help="default: the file's name")
    sub.add_argument("--description", default="")
    sub.add_argument("--metric", default="accuracy")
    sub.add_argument(
        "--label",
        default=None,
        help="what the model predicts: classes:N, binary, multilabel:N or regression "
        "(default: read from its output layer)",
    )
    sub.add_argument(
        "--feature",
        action="append",
        default=[],
        help="a table's column, in the model's input order (repeat for each)",
    )
    sub.add_argument(
        "--strategy",
        default="fedavg",
        help="aggregation strategy: fedavg, fedprox, fedavgm, fedadam, fedyogi, fedmedian, "
        "trimmed_mean, krum, multikrum, proxyfl (a linear one may end in :secure)",
    )
    sub.add_argument(
        "--strategy-param",
        action="append",
        default=[],
        metavar="K=V",
        help="a strategy parameter, repeatable: mu (fedprox); eta, beta_1, beta_2, tau "
        "(fedadam, fedyogi); eta, momentum (fedavgm); beta (trimmed_mean); f, keep (krum, "
        "multikrum); alpha, beta (proxyfl)",
    )
    sub.add_argument("--license", default="proprietary")
    sub.add_argument("--jurisdiction", action="append", default=[], help="repeatable")
    sub.add_argument("--validator", action="append", default=[], help="repeatable")
    sub.add_argument("--stake-asset", type=int, default=None, help="Assets id for stakes")
    sub.add_argument("--reward-policy", choices=C.REWARD_KINDS, default="proportional")
    sub.add_argument("--round-reward", type=int, default=0, help="minimum budget of a round")
    sub.add_argument(
        "--slash-permill",
        type=int,
        default=C.DEFAULT_SLASH_PPM,
        help="share of a worker's stake slashed for a rejected update, in millionths "
        f"(default {C.DEFAULT_SLASH_PPM}: 10%%; 0: none)",
    )
    sub.add_argument(
        "--deposit",
        type=int,
        default=0,
        help="drt: what every update deposits (stake asset): refunded when accepted, after a "
        "wait; shared among the round's accepted contributors when rejected",
    )
    sub.add_argument(
        "--improvement-tolerance",
        type=float,
        default=0.0,
        help="a round pays only if its model is no worse than its base on the model's metric "
        "by more than this (in the metric's unit; default 0: not worse)",
    )
    sub.add_argument(
        "--unimproved",
        choices=C.UNIMPROVED,
        default="adopt",
        help="a round that does not improve: adopt its model without rewards (default) or "
        "reject it; either way its budget goes back",
    )
    _add(m_sub, "list", cmd_model_list, "every model")
    show = _add(m_sub, "show", cmd_model_show, "one model")
    show.add_argument("id", type=_model_id)
    start = _add(m_sub, "start", cmd_model_start, "move an approved model to training")
    start.add_argument("id", type=_model_id)

    fetch = _add(m_sub, "fetch", cmd_model_fetch, "save the global model as a .keras file")
    fetch.add_argument("id", type=_model_id)
    fetch.add_argument("--round", type=int, default=None, help="that round's model (0: initial)")
    fetch.add_argument("--out", required=True)
    pred = _add(m_sub, "predict", cmd_model_predict, "predict classes with the global model")
    pred.add_argument("id", type=_model_id)
    pred.add_argument("--input", required=True, help="a .npy array of inputs")

    rnd = verbs.add_parser("round", help="federated rounds: start, status, watch, history")
    r_sub = rnd.add_subparsers(dest="action", metavar="ACTION", parser_class=_Parser)
    rs = _add(r_sub, "start", cmd_round_start, "start a round of a training model")
    rs.add_argument("model", type=_model_id)
    rs.add_argument("--clients", type=int, default=4, help="workers to select")
    rs.add_argument("--min-clients", type=int, default=None, help="default: --clients")
    rs.add_argument("--deadline", type=int, default=0, help="blocks to submit (0: protocol's)")
    rs.add_argument("--aggregate-deadline", type=int, default=0, help="blocks to attest")
    rs.add_argument(
        "--epochs",
        type=int,
        default=DEFAULT_LOCAL_EPOCHS,
        help=f"local epochs per update (default {DEFAULT_LOCAL_EPOCHS})",
    )
    rs.add_argument("--batch-size", type=int, default=32)
    rs.add_argument(
        "--lr",
        type=float,
        default=None,
        help="local learning rate (default: the model's own optimizer's; 0.05 for plain SGD)",
    )
    rs.add_argument("--reward", type=int, default=0, help="budget paid to contributors (per round)")
    rs.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="run this many rounds back to back: each opens in the block that ends the one "
        "before (one call; the budget is --reward times --rounds)",
    )
    rs.add_argument("--clip-norm", type=float, default=None, help="DP: clip updates to this")
    rs.add_argument("--noise-multiplier", type=float, default=None, help="DP: noise scale")
    rs.add_argument(
        "--bounty",
        type=int,
        default=0,
        help="prediction market: paid after the plan by each round's gain on your hidden test "
        "set (with --test-commitment)",
    )
    rs.add_argument("--test-commitment", default=None, metavar="HASH", help="from `round commit`")
    rc = _add(r_sub, "commit", cmd_round_commit, "commit to a hidden test set (a market's)")
    rc.add_argument("--test-set", required=True, help="an .npz file of arrays x and y")
    rc.add_argument("--model", type=_model_id, default=None, help="check it fits this model")
    rc.add_argument("--out", required=True, help="new file for its CID and salt (mode 600)")
    rr = _add(r_sub, "reveal", cmd_round_reveal, "reveal a market's test set after its plan")
    rr.add_argument("model", type=_model_id)
    rr.add_argument("--commitment-file", default=None, help="what `round commit --out` wrote")
    rr.add_argument("--test-cid", default=None)
    rr.add_argument("--salt", default=None, metavar="HEX")
    rr.add_argument("--test-set", default=None, help="the file, uploaded for the validators")
    rm = _add(r_sub, "markets", cmd_round_markets, "prediction markets: bounty, status, paid")
    rm.add_argument("--model", type=_model_id, default=None)
    rst = _add(r_sub, "status", cmd_round_status, "a round's progress and results")
    rst.add_argument("id", type=_model_id)
    rw = _add(r_sub, "watch", cmd_round_watch, "follow a round until it ends")
    rw.add_argument("id", type=_model_id)
    rw.add_argument("--timeout", type=float, default=600.0)
    rw.add_argument(
        "--plan",
        action="store_true",
        help="follow the rounds started after it by the same `round start --rounds` plan; "
        'the answer adds a "plan" list, one entry per round',
    )
    rh = _add(r_sub, "history", cmd_round_history, "every round of a model")
    rh.add_argument("model", type=_model_id)
    rh.add_argument("--csv", default=None, help="also write one row per (round, worker) here")

    dn = verbs.add_parser("devnet", help="the dev network: chain, storage, workers, validators")
    d_sub = dn.add_subparsers(dest="action", metavar="ACTION", parser_class=_Parser)
    dup = _add(d_sub, "up", cmd_devnet_up, "start chain, storage and every agent")
    dup.add_argument(
        "--workers", type=int, default=4, help="0: validators only, participants join later"
    )
    dup.add_argument("--validators", type=int, default=3)
    dup.add_argument("--base-path", default=None)
    dup.add_argument("--dataset", default="digits")
    dup.add_argument("--partition", default="iid", help="iid or dirichlet:ALPHA")
    dup.add_argument("--seed", type=int, default=0)
    dup.add_argument("--attackers", type=int, default=0, help="poisoning workers (last N)")
    dup.add_argument("--attack", choices=["label_flip", "scale"], default="label_flip")
    dup.add_argument("--clock", type=float, default=3.0, help="seconds per idle block")
    dup.add_argument(
        "--block-mode",
        choices=["instant", "batch"],
        default="batch",
        help="batch (default): one block for what arrives within 0.1 s, so a round's updates "
        "and attestations share blocks; instant: a block per transaction",
    )
    dup.add_argument(
        "--worker-processes",
        type=int,
        default=None,
        help="run the workers in this many processes (default: one per CPU core, at most one "
        "per worker); a process of several signs for them as their proxy, one transaction "
        "per block",
    )
    dup.add_argument(
        "--validator-processes",
        type=int,
        default=None,
        help="run the validators in this many processes (default: one each); a process of "
        "several holds one TensorFlow runtime and judges a round once, and each of its "
        "validators signs its own attestations",
    )
    dup.add_argument(
        "--data",
        default=None,
        help="a folder of the agents' own data: worker-<i>.<csv|parquet|npz> (or a folder "
        "worker-<i>/ of images) for worker i, validator.<ext> for the validators",
    )
    dup.add_argument("--target", default=None, help="the label column of the tables in --data")
    _add(d_sub, "status", cmd_devnet_status, "every process of the dev network")
    _add(d_sub, "down", cmd_devnet_down, "stop every process of the dev network")
    for role in ("worker", "validator"):
        ag = _add(verbs, role, cmd_agent, f"run a {role} in the foreground (Ctrl-C stops)")
        ag.add_argument(
            "agent_args",
            nargs=argparse.REMAINDER,
            help=f"the {role}'s own options: --data PATH [--target COL] (its own data), "
            f"--model ID, ... (all of them: dfml {role} -- --help); in a notebook also "
            f"`{role} join MODEL --data VAR`, `{role} status`, `{role} leave [MODEL]`",
        )

    st = _add(verbs, "stake", cmd_stake, "stake on a model (a transfer into its pool)")
    st.add_argument("model", type=_model_id)
    st.add_argument("amount", type=_amount)
    st.add_argument("--asset", type=int, default=None, help="an Assets id (bring your own token)")
    ust = _add(verbs, "unstake", cmd_unstake, "release stake after the lock period")
    ust.add_argument("model", type=_model_id)
    ust.add_argument("amount", type=_amount)
    for name, fn, what in (
        ("stakes", cmd_stakes, "stakes, by model and account"),
        ("reputation", cmd_reputation, "each worker's record per model, derived from the chain"),
    ):
        sts = _add(verbs, name, fn, what)
        sts.add_argument("--model", type=_model_id, default=None)
        sts.add_argument("--account", default=None)

    pr = _add(verbs, "propose", cmd_propose, "propose a governance change")
    pr.add_argument("target", help="a model id, or 'protocol'")
    pr.add_argument("kind", help="ApproveModel, RetireModel, AddValidator, SetStrategy, ...")
    pr.add_argument("--param", action="append", default=[], help="K=V, repeatable")
    pr.add_argument("--deadline", type=int, default=10, help="voting period in blocks")
    vo = _add(verbs, "vote", cmd_vote, "vote on a proposal (weighted by your stake)")
    vo.add_argument("proposal", type=_model_id)
    vo.add_argument("choice", choices=["aye", "nay"])
    pl = _add(verbs, "proposals", cmd_proposals, "proposals with their tallies")
    pl.add_argument("--open", action="store_true", help="only those still open")

    er = _add(verbs, "errors", cmd_errors, "protocol calls that were rejected, with reasons")
    er.add_argument("--account", default=None)
    po = _add(verbs, "payouts", cmd_payouts, "value owed out of pools")
    po.add_argument("--pending", action="store_true")
    _add(verbs, "pools", cmd_pools, "model pools: on-chain balance beside what they owe")
    payout = verbs.add_parser("payout", help="approve a payout as a pool signatory")
    pay_sub = payout.add_subparsers(dest="action", metavar="ACTION", parser_class=_Parser)
    pa = _add(pay_sub, "approve", cmd_payout_approve, "approve (or execute) a pending payout")
    pa.add_argument("id", type=_model_id)

    from .economy import ADVERSARIAL_KINDS, POLICIES, RULES

    economy = verbs.add_parser("economy", help="the economics of rounds, simulated in-process")
    e_sub = economy.add_subparsers(dest="action", metavar="ACTION", parser_class=_Parser)
    es = _add(
        e_sub,
        "simulate",
        cmd_economy_simulate,
        "honest, lazy, noisy, adversarial workers and free riders under a reward policy, many "
        "rounds, no chain: each kind's average net balance per round and the model's accuracy",
    )
    es.add_argument("--policy", choices=POLICIES, required=True, help="how rounds pay")
    es.add_argument(
        "--rules",
        choices=RULES,
        default="paper",
        help="drt and prediction-market as 0xDeCA10B publishes them (paper, the default) or as "
        "the protocol pays them on chain (chain)",
    )
    es.add_argument("--honest", type=_count, default=10, metavar="N", help="honest workers")
    es.add_argument(
        "--adversarial", type=_count, default=4, metavar="M", help="malicious workers (--kinds)"
    )
    es.add_argument(
        "--free-riders", type=_count, default=2, metavar="K", help="resubmit the global model"
    )
    es.add_argument("--lazy", type=_count, default=0, help="train one epoch on half their data")
    es.add_argument("--noisy", type=_count, default=0, help="add noise as large as their update")
    es.add_argument(
        "--kinds",
        default=",".join(ADVERSARIAL_KINDS),
        help="the adversarial kinds, taken in turn (comma-separated)",
    )
    es.add_argument("--rounds", type=_count, default=30, metavar="R")
    es.add_argument("--seed", type=_count, default=0, metavar="S")
    es.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="K=V",
        help="an economic setting: round_reward, fee, compute, stake, slash_permill, deposit, wait",
    )

    task = verbs.add_parser("task", help="tasks for data annotators, contributors, engineers")
    t_sub = task.add_subparsers(dest="action", metavar="ACTION", parser_class=_Parser)
    tc = _add(t_sub, "create", cmd_task_create, "create a task; its budget moves into the pool")
    tc.add_argument("model", type=_model_id)
    tc.add_argument("type", choices=C.ROLES)
    tc.add_argument("--reward", type=_amount, required=True, help="paid per accepted result")
    tc.add_argument("--max-assignments", type=int, default=1)
    tc.add_argument("--duration", type=int, default=50, help="blocks until it expires")
    tc.add_argument("--validation", choices=C.VALIDATION, default="manual")
    tc.add_argument("--description", default="")
    tl = _add(t_sub, "list", cmd_task_list, "tasks")
    tl.add_argument("--model", type=_model_id, default=None)
    tsub = _add(t_sub, "submissions", cmd_task_submissions, "submitted results and decisions")
    tsub.add_argument("--task", type=_model_id, default=None)
    ta = _add(t_sub, "assign", cmd_task_assign, "take a task")
    ta.add_argument("id", type=_model_id)
    ts = _add(t_sub, "submit", cmd_task_submit, "submit a result (a CID)")
    ts.add_argument("id", type=_model_id)
    ts.add_argument("--result", required=True, help="the result's CID")
    tac = _add(t_sub, "accept", cmd_task_accept, "accept a submission (pays its reward)")
    tac.add_argument("submission", type=_model_id)
    trj = _add(t_sub, "reject", cmd_task_reject, "reject a submission")
    trj.add_argument("submission", type=_model_id)
    trj.add_argument("--reason", default="")

    remark = _add(verbs, "remark", cmd_remark, "put a System.remark_with_event on chain")
    remark.add_argument("text", nargs="?", default="", help="text to record")
    remark.add_argument("--hex", default=None, help="record these bytes instead (hex)")
    _add_call_verbs(verbs)
    dec = _add(
        verbs,
        "decode",
        cmd_decode,
        "a protocol remark as JSON: its bytes (hex), or the remarks an extrinsic executed",
    )
    dec.add_argument(
        "remark",
        metavar="HEX|BLOCK:EXTRINSIC[:POSITION]",
        help="the remark's bytes as hex (0x...), or where it is on chain: block number and "
        "extrinsic index as an explorer shows them (1234:2; :POSITION picks one remark of a "
        "batch, from 0)",
    )
    if defaults:
        parser.set_defaults(**defaults)
    return parser


@functools.lru_cache(maxsize=8)
def _cached_parser(prog: str, defaults: tuple[tuple[str, str], ...]) -> argparse.ArgumentParser:
    return build_parser(prog, dict(defaults) or None)


def parser_for(prog: str = "dfml", defaults: dict[str, str] | None = None):
    """`build_parser`, built once per (prog, defaults) and kept: building it costs ~9 ms, six
    times a warm read (parsing a line with it costs microseconds and changes nothing in it).
    The environment's defaults are part of the key, so a changed DFML_URL is seen."""
    effective = {
        "url": config.default_url(),
        "storage": config.default_storage(),
        "key": config.default_key(),
        "from_block": config.default_from_block(),
        **(defaults or {}),
    }
    return _cached_parser(prog, tuple(sorted(effective.items())))


def plain(result: Any) -> Any:
    """A verb's typed result as the JSON data of CLI.md."""
    if hasattr(result, "to_json"):
        return result.to_json()
    if isinstance(result, list | tuple):
        return [plain(r) for r in result]
    return result


def shown(result: Any, session: Session) -> Any:
    """A verb's typed result as people see it: the JSON data of CLI.md with every address in
    the chain's own SS58 format (the protocol's state spells them in the generic 42). Only a
    chain the session is already connected to is asked: spelling never opens a connection."""
    data = plain(result)
    fmt = getattr(getattr(session, "_chain", None), "ss58_format", None)
    if not isinstance(fmt, int):  # not connected (or a stand-in session)
        return data
    from .chain.client import in_chain_format

    return in_chain_format(data, fmt)


def execute(
    argv: Sequence[str],
    prog: str = "dfml",
    *,
    session: Session | None = None,
    progress: Progress | None = _stderr_progress,
    bind: dict[str, Any] | None = None,
    as_shown: bool = False,
) -> Any:
    """Parse ``argv`` and run the verb; its typed result (a value, a receipt, or a list), or
    with ``as_shown`` its plain data as `shown` spells it.

    With ``session``, the verb runs on it unless the line names other endpoints or another
    key (then on a Session of its own, closed after). ``bind`` replaces parsed arguments by
    Python objects (the magic passes a Keras model of the kernel as ``path``)."""
    defaults = None
    if session is not None:
        defaults = {
            "url": session.url,
            "storage": session.storage,
            "key": session._key,
            "from_block": session.from_block,
        }
    parser = parser_for(prog, defaults)
    head, agent_args = _agent_split(parser, list(argv))
    args = parser.parse_args(head)
    if agent_args is not None:  # the agent's own options, read by the agent's parser
        args.agent_args = agent_args
    if getattr(args, "key_file", None):
        from .chain.keys import check_key_file

        args.key = str(check_key_file(args.key_file))
    func = getattr(args, "func", None)
    if func is None:
        sub = [a for a in argv if not a.startswith("-")][:1]
        raise UsageError(
            f"{prog} {' '.join(sub)}: missing verb".replace("  ", " "),
            hint=f"see: {prog} {' '.join(sub)} --help".replace("  ", " "),
        )
    for name, value in (bind or {}).items():
        setattr(args, name, value)
    args.prog = prog
    from .session import Session

    own = session is None or not session.same_endpoints(
        args.url, args.storage, args.key, args.from_block
    )
    s = Session(args.url, args.storage, args.key, from_block=args.from_block) if own else session
    try:
        with s.reporting(progress):  # a long first catch-up of the index shows its progress
            result = func(s, args, progress)
            return shown(result, s) if as_shown else result
    finally:
        if own:
            s.close()


def _agent_split(parser, argv: list[str]) -> tuple[list[str], list[str] | None]:
    """``[global options] worker|validator [agent options]``: the line up to the verb, and
    the agent's own arguments after it (argparse cannot hand a positional remainder that
    starts with an option such as ``--data``); None for any other verb."""
    i = 0
    while i < len(argv):
        tok = argv[i]
        if tok in ("worker", "validator"):
            rest = argv[i + 1 :]
            if rest in (["-h"], ["--help"]):
                return argv, None  # the verb's help; `VERB -- --help` is the agent's
            return argv[: i + 1], rest[1:] if rest[:1] == ["--"] else rest
        if not tok.startswith("-"):
            return argv, None  # another verb
        action = parser.options.get(tok.split("=", 1)[0])
        i += 2 if action is not None and action.nargs != 0 and "=" not in tok else 1
    return argv, None


def run(argv: Sequence[str], prog: str = "dfml", **kwargs: Any) -> Any:
    """Parse ``argv`` and run the verb; its result as plain data (the JSON of CLI.md), its
    addresses in the chain's SS58 format."""
    return execute(argv, prog, as_shown=True, **kwargs)


def _human(result) -> str:
    import yaml

    result = json.loads(json.dumps(result))  # tuples and dataclass fields as plain data
    return yaml.safe_dump(result, sort_keys=False, default_flow_style=False).rstrip()


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    as_json = "--json" in argv
    try:
        from .chain.keys import refuse_secret_in_argv

        refuse_secret_in_argv(argv)  # a process's argv is readable by every local user
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
