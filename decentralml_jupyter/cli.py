"""`dfml`: the command line. One parser and one implementation per verb, shared with `%dfml`.

`run(argv)` parses and executes a verb and returns its result as plain data (the JSON of
CLI.md); `main()` prints it. Failures raise DfmlError, printed as {"error", "hint"}.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from urllib.parse import urlparse

from . import __version__, config
from .errors import DfmlError, NotFound, UsageError


class _Parser(argparse.ArgumentParser):
    """argparse that raises UsageError instead of exiting, so the magic can report it too."""

    def error(self, message: str):
        raise UsageError(f"{self.prog}: {message}", hint=f"see: {self.prog} --help")


def _port_of(url: str) -> int:
    return urlparse(url).port or 9944


def _progress(msg: str, fraction: float | None = None) -> None:
    print(f"[dfml] {msg}", file=sys.stderr, flush=True)


def _byte_progress(what: str) -> Callable[[int, int], None]:
    """A ``(done, total)`` callback reporting ``what`` every 10%, through ``_progress`` (a
    bar in a notebook, lines on stderr in a shell)."""
    shown = [-1]

    def report(done: int, total: int) -> None:
        step = int(10 * done / total) if total else 10
        if step > shown[0]:
            shown[0] = step
            # looked up at call time: the magic swaps in a notebook progress bar
            sys.modules[__name__]._progress(
                f"{what}: {done / 2**20:.1f} of {total / 2**20:.1f} MiB", step / 10
            )

    return report


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


def cmd_chain_advance(args):
    with _chain(args) as chain:
        return {"block": chain.new_blocks(args.blocks)}


# -- storage ----------------------------------------------------------------------------------


def _store(args):
    from .storage import KuboStore

    return KuboStore.from_env(args.storage)


def cmd_storage_up(args):
    from .storage import storage_up

    port = args.port if args.port is not None else (urlparse(args.storage).port or 5001)
    return storage_up(port=port, repo=args.repo)


def cmd_storage_status(args):
    from .storage import storage_status

    return storage_status(args.storage)


def cmd_storage_down(args):
    from .storage import storage_down

    return storage_down(args.storage)


def cmd_storage_put(args):
    name = Path(args.file).name
    return _store(args).put_file(args.file, progress=_byte_progress(f"uploading {name}")).to_json()


def cmd_storage_get(args):
    return _store(args).get_file(args.cid, args.out).to_json()


# -- protocol ---------------------------------------------------------------------------------


def _protocol(args):
    from .protocol.client import ProtocolClient

    return ProtocolClient(_chain(args))


def _tx(submitted, **fields) -> dict:
    return {**fields, "receipt": submitted.receipt.to_json()}


def _model_id(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a model id (an integer)") from None
    if value <= 0:
        raise argparse.ArgumentTypeError("ids start at 1")
    return value


def _model_artifacts(path: str) -> tuple[bytes, bytes]:
    """(architecture spec, initial weights) of a saved Keras model."""
    from pathlib import Path

    p = Path(path)
    if not p.exists():
        raise UsageError(f"no model file at {path}", hint="save it with model.save('m.keras')")
    if p.suffix not in (".keras", ".h5"):
        raise UsageError(
            f"{path} is not a Keras model file (.keras)", hint="save it with model.save('m.keras')"
        )
    from . import fl
    from .fl._tf import keras

    try:
        model = keras().models.load_model(p, compile=False)
    except Exception as exc:
        raise UsageError(
            f"{path} could not be loaded as a Keras model: {exc}",
            hint="save it with model.save('m.keras') from Keras 3",
        ) from None
    return fl.model_to_spec(model), fl.weights_to_bytes(model.get_weights())


def cmd_model_submit(args):
    from .protocol import RewardPolicy

    spec, weights = _model_artifacts(args.path)
    store = _store(args)
    arch_cid, weights_cid = store.put(spec), store.put(weights)
    with _protocol(args) as proto:
        validators = [proto.chain.address(v) for v in args.validator]
        if not validators:  # on a dev network, its validators judge the model by default
            from .agents import devnet

            validators = devnet.validator_addresses(args.url)
        sub = proto.register_model(
            args.key,
            args.name or Path(args.path).stem,
            arch_cid,
            weights_cid,
            description=args.description,
            metric=args.metric,
            licence=args.license,
            jurisdictions=args.jurisdiction,
            strategy=args.strategy,
            stake_asset=args.stake_asset,
            validators=validators,
            reward_policy=RewardPolicy(args.reward_policy, args.round_reward, args.slash_permill),
        )
        model_id = sub.created_id("model")
        pool = proto.state().model(model_id).pool
    return _tx(
        sub, model_id=model_id, architecture_cid=arch_cid, weights_cid=weights_cid, pool=pool
    )


def cmd_model_list(args):
    with _protocol(args) as proto:
        return [m.to_json() for m in proto.state().models()]


def cmd_model_show(args):
    with _protocol(args) as proto:
        model = proto.state().model(args.id)
        if model is None:
            raise NotFound(f"no model {args.id}", hint="list them with: dfml model list")
        return model.to_json()


def cmd_model_start(args):
    with _protocol(args) as proto:
        return _tx(proto.start_training(args.key, args.id), model_id=args.id)


def cmd_stake(args):
    with _protocol(args) as proto:
        sub = proto.stake(args.key, args.model, args.amount, args.asset)
        rows = proto.state().stakes(model_id=args.model, account=proto.chain.address(args.key))
        return _tx(sub, stake=rows[0].to_json() if rows else None)


def cmd_unstake(args):
    with _protocol(args) as proto:
        sub = proto.unstake(args.key, args.model, args.amount)
        rows = proto.state().stakes(model_id=args.model, account=proto.chain.address(args.key))
        return _tx(sub, stake=[r.to_json() for r in rows])


def cmd_stakes(args):
    with _protocol(args) as proto:
        account = proto.chain.address(args.account) if args.account else None
        return [s.to_json() for s in proto.state().stakes(model_id=args.model, account=account)]


def cmd_propose(args):
    from .protocol import encoders

    params = {}
    for item in args.param:
        if "=" not in item:
            raise UsageError(f"--param {item!r} is not K=V", hint="e.g. --param account=Dev1")
        k, v = item.split("=", 1)
        params[k] = v
    target = None if args.target == "protocol" else _model_id(args.target)
    with _protocol(args) as proto:
        for k in ("account",):  # accept dev names where an address is expected
            if k in params:
                params[k] = proto.chain.address(params[k])
        if "allow" in params:
            params["allow"] = ",".join(proto.chain.address(a) for a in params["allow"].split(","))
        action = encoders.action_from_params(args.kind, params)
        sub = proto.propose(args.key, target, action, args.deadline)
        return _tx(sub, proposal_id=sub.created_id("proposal"))


def cmd_vote(args):
    with _protocol(args) as proto:
        return _tx(proto.vote(args.key, args.proposal, args.choice == "aye"))


def cmd_proposals(args):
    with _protocol(args) as proto:
        return [p.to_json() for p in proto.state().proposals(open_only=args.open)]


def cmd_errors(args):
    with _protocol(args) as proto:
        account = proto.chain.address(args.account) if args.account else None
        return [e.to_json() for e in proto.state().errors(account=account)]


def cmd_payouts(args):
    with _protocol(args) as proto:
        state = proto.state()
        rows = state.pending_payouts() if args.pending else state.payouts()
        return [p.to_json() for p in rows]


def cmd_pools(args):
    with _protocol(args) as proto:
        out = []
        for pool in proto.state().pools():
            row = pool.to_json()
            if pool.asset_id is None:  # what the chain holds, beside what the protocol owes
                row["on_chain"] = proto.chain.balance(pool.pool).free
            out.append(row)
        return out


def cmd_payout_approve(args):
    with _protocol(args) as proto:
        receipt = proto.approve_payout(args.key, args.id)
        return {"payout_id": args.id, "receipt": receipt.to_json()}


def cmd_task_create(args):
    with _protocol(args) as proto:
        sub = proto.create_task(
            args.key,
            args.model,
            args.type,
            args.reward,
            args.max_assignments,
            args.duration,
            validation=args.validation,
            description=args.description,
        )
        return _tx(sub, task_id=sub.created_id("task"))


def cmd_task_list(args):
    with _protocol(args) as proto:
        return [t.to_json() for t in proto.state().tasks(model_id=args.model)]


def cmd_task_submissions(args):
    with _protocol(args) as proto:
        return [s.to_json() for s in proto.state().submissions(task_id=args.task)]


def cmd_task_assign(args):
    with _protocol(args) as proto:
        return _tx(proto.assign_task(args.key, args.id), task_id=args.id)


def cmd_task_submit(args):
    with _protocol(args) as proto:
        sub = proto.submit_result(args.key, args.id, args.result)
        return _tx(sub, submission_id=sub.created_id("submission"))


def cmd_task_accept(args):
    with _protocol(args) as proto:
        return _tx(proto.accept_submission(args.key, args.submission))


def cmd_task_reject(args):
    with _protocol(args) as proto:
        return _tx(proto.reject_submission(args.key, args.submission, args.reason))


def cmd_round_start(args):
    from .protocol import encoders

    spec = encoders.round_spec(
        args.clients,
        args.min_clients,
        submit_blocks=args.deadline,
        aggregate_blocks=args.aggregate_deadline,
        epochs=args.epochs,
        batch_size=args.batch_size,
        learning_rate=args.lr,
        clip_norm=args.clip_norm,
        noise_multiplier=args.noise_multiplier,
        reward=args.reward,
    )
    if not 1 <= args.rounds <= 1000:
        raise UsageError(f"--rounds must be 1..1000, got {args.rounds}")
    with _protocol(args) as proto:
        sub = proto.start_rounds(args.key, args.model, spec, args.rounds)
        out = _tx(sub, round_id=sub.created_id("round"))
        if args.rounds > 1:
            out["rounds"] = args.rounds
        return out


def _round(proto, round_id: int):
    rnd = proto.state().round(round_id)
    if rnd is None:
        raise NotFound(f"no round {round_id}", hint="see: dfml round history MODEL")
    return rnd


def cmd_round_status(args):
    with _protocol(args) as proto:
        rnd = _round(proto, args.id)
        out = round_json(rnd)
        if rnd.status in ("finalized", "failed"):
            nxt = _next_in_plan(proto.state(), rnd)
            out["next_round_id"] = None if nxt is None else nxt.round_id
        return out


def round_json(rnd) -> dict:
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
    return out


def cmd_round_watch(args):
    import time

    from .chain.heads import HeadWatcher

    deadline = time.monotonic() + args.timeout
    with _protocol(args) as proto:
        heads = HeadWatcher(proto.chain.url)  # look again as soon as a block is finalized
        try:
            plan, rid, last = [], args.id, None
            while True:
                seen = heads.number
                state = proto.state()
                rnd = state.round(rid)
                if rnd is None:
                    raise NotFound(f"no round {rid}", hint="see: dfml round history MODEL")
                line = (rnd.round_id, rnd.status, len(rnd.submitted), len(rnd.attestations))
                if line != last:
                    _progress(
                        f"round {rnd.round_id}: {rnd.status}, {len(rnd.submitted)}/"
                        f"{len(rnd.selected)} updates, {len(rnd.attestations)} attestations"
                    )
                    last = line
                if rnd.status in ("finalized", "failed"):
                    nxt = _next_in_plan(state, rnd) if args.plan else None
                    if args.plan:
                        plan.append(
                            {
                                "round_id": rnd.round_id,
                                "status": rnd.status,
                                "accuracy": rnd.metrics.get("accuracy"),
                                "ended_block": rnd.ended_block,
                            }
                        )
                    if nxt is None:
                        out = round_json(rnd)
                        if args.plan:
                            out["plan"] = plan
                        return out
                    rid = nxt.round_id
                    continue
                if time.monotonic() > deadline:
                    raise DfmlError(
                        f"round {rid} still {rnd.status} after {args.timeout:.0f} s",
                        hint="is the dev network running? dfml devnet status; then watch again",
                    )
                heads.wait(after=seen, timeout=1.0)
        finally:
            heads.close()


def _next_in_plan(state, rnd):
    """The round a StartRounds plan opened as ``rnd`` ended, or None."""
    return next(
        (
            r
            for r in state.rounds(rnd.model_id)
            if r.round_id > rnd.round_id
            and r.starter == rnd.starter
            and r.start_block == rnd.ended_block
            and r.proposal_id is None
        ),
        None,
    )


def cmd_round_history(args):
    with _protocol(args) as proto:
        if proto.state().model(args.model) is None:
            raise NotFound(f"no model {args.model}", hint="list them with: dfml model list")
        if args.csv:
            frame = proto.rounds_frame(args.model)
            frame.to_csv(args.csv, index=False)
        return [round_json(r) for r in proto.state().round_history(args.model)]


def _global_weights(proto, store, model_id: int, round_number: int | None):
    model = proto.state().model(model_id)
    if model is None:
        raise NotFound(f"no model {model_id}", hint="list them with: dfml model list")
    cid = model.global_cid
    if round_number is not None:
        if round_number == 0:
            cid = model.weights_cid
        else:
            rounds = [r for r in proto.state().round_history(model_id) if r.number == round_number]
            if not rounds:
                raise UsageError(
                    f"model {model_id} has no finalized round {round_number}",
                    hint=f"its rounds: dfml round history {model_id}",
                )
            cid = rounds[0].aggregate_cid
    return model, cid, store.get(model.architecture_cid), store.get(cid)


def cmd_model_fetch(args):
    from . import fl

    store = _store(args)
    with _protocol(args) as proto:
        _, cid, spec, weights = _global_weights(proto, store, args.id, args.round)
    model = fl.model_from_spec(spec)
    model.set_weights(fl.weights_from_bytes(weights))
    out = Path(args.out)
    if out.suffix != ".keras":
        raise UsageError(f"{args.out} must end in .keras", hint="e.g. --out model.keras")
    model.save(out)
    return {"path": str(out), "cid": cid}


def cmd_model_predict(args):
    import numpy as np

    from . import fl

    try:
        x = np.load(args.input, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise UsageError(
            f"cannot read {args.input} as a .npy array: {exc}", hint="save inputs with np.save"
        ) from None
    store = _store(args)
    with _protocol(args) as proto:
        _, cid, spec, weights = _global_weights(proto, store, args.id, None)
    probs = fl.predict(spec, fl.weights_from_bytes(weights), np.asarray(x, dtype=np.float32))
    return {"predictions": np.asarray(probs).argmax(axis=-1).tolist(), "cid": cid}


def cmd_devnet_up(args):
    from .agents import devnet

    return devnet.up(
        args.url,
        args.storage,
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
        progress=_progress,
    )


def cmd_devnet_status(args):
    from .agents import devnet

    return devnet.status(args.url)


def cmd_devnet_down(args):
    from .agents import devnet

    return devnet.down(args.url)


def cmd_agent(args):
    from .agents import validator, worker

    module = worker if args.verb == "worker" else validator
    # in this process: the key never reaches a command line
    module.main(["--url", args.url, "--storage", args.storage, "--key", args.key, *args.agent_args])
    return {"stopped": True}


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
        help="signing key: a dev URI (//Alice) or a key file; a mnemonic or seed only in a key "
        "file or DFML_KEY, never on the command line; never printed",
    )
    parser.add_argument(
        "--key-file",
        default=None,
        help="file holding the signing key (a mnemonic, a 0x seed or a polkadot-js JSON export); "
        "refused unless only its owner can read it (chmod 600)",
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
    sub.add_argument("--strategy", default="fedavg", help="aggregation strategy")
    sub.add_argument("--license", default="proprietary")
    sub.add_argument("--jurisdiction", action="append", default=[], help="repeatable")
    sub.add_argument("--validator", action="append", default=[], help="repeatable")
    sub.add_argument("--stake-asset", type=int, default=None, help="Assets id for stakes")
    sub.add_argument("--reward-policy", choices=["proportional", "equal"], default="proportional")
    sub.add_argument("--round-reward", type=int, default=0, help="minimum budget of a round")
    sub.add_argument(
        "--slash-permill", type=int, default=0, help="stake share slashed for a bad update"
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
    rs.add_argument("--epochs", type=int, default=1)
    rs.add_argument("--batch-size", type=int, default=32)
    rs.add_argument("--lr", type=float, default=0.05)
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
    dup.add_argument("--workers", type=int, default=4)
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
    _add(d_sub, "status", cmd_devnet_status, "every process of the dev network")
    _add(d_sub, "down", cmd_devnet_down, "stop every process of the dev network")
    for role in ("worker", "validator"):
        ag = _add(verbs, role, cmd_agent, f"run a {role} in the foreground (Ctrl-C stops)")
        ag.add_argument("agent_args", nargs=argparse.REMAINDER, help="--dataset, --index, ...")

    st = _add(verbs, "stake", cmd_stake, "stake on a model (a transfer into its pool)")
    st.add_argument("model", type=_model_id)
    st.add_argument("amount", type=_amount)
    st.add_argument("--asset", type=int, default=None, help="an Assets id (bring your own token)")
    ust = _add(verbs, "unstake", cmd_unstake, "release stake after the lock period")
    ust.add_argument("model", type=_model_id)
    ust.add_argument("amount", type=_amount)
    sts = _add(verbs, "stakes", cmd_stakes, "stakes, by model and account")
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

    task = verbs.add_parser("task", help="tasks for data annotators, contributors, engineers")
    t_sub = task.add_subparsers(dest="action", metavar="ACTION", parser_class=_Parser)
    tc = _add(t_sub, "create", cmd_task_create, "create a task; its budget moves into the pool")
    tc.add_argument("model", type=_model_id)
    tc.add_argument("type", choices=["data_annotator", "model_contributor", "model_engineer"])
    tc.add_argument("--reward", type=_amount, required=True, help="paid per accepted result")
    tc.add_argument("--max-assignments", type=int, default=1)
    tc.add_argument("--duration", type=int, default=50, help="blocks until it expires")
    tc.add_argument("--validation", choices=["auto", "manual"], default="manual")
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
    return parser


def run(argv: Sequence[str], prog: str = "dfml"):
    """Parse ``argv`` and run the verb; return its result (plain data)."""
    parser = build_parser(prog)
    args = parser.parse_args(list(argv))
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
    return func(args)


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
