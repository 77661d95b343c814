"""Sending protocol calls: each a remark (batched atomically with its transfer when it moves
value), submitted, then checked against the indexed state so that a call the protocol rejected
raises with its reason instead of passing silently.

:meth:`ProtocolClient.send` sends any call: what must travel with it (``target_model()``,
``funds()``, ``pays_pool()``, ``FUNDED``, ``ASSET_FIELD``) is declared by the call's class in
``calls``; the named methods (``stake``, ``create_task``, ...) build a call and send it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from ..chain import Chain, Receipt
from ..errors import ChainError, NotFound
from . import calls as C
from . import encoders
from .calls import Action, Call, encode_call
from .errors import ProtocolError, ProtocolRejected
from .indexer import Indexer
from .state import MIN_POOL_SIGNATORIES, State
from .values import Payout


def _asset_label(asset: int | None) -> str:
    return "the native token" if asset is None else f"asset {asset}"


@dataclass(frozen=True)
class Submitted:
    receipt: Receipt
    created: tuple[tuple[str, int], ...]  # (entity, id) the call created

    def created_id(self, entity: str) -> int | None:
        return next((i for e, i in self.created if e == entity), None)


class ProtocolClient:
    """The DecentralML protocol over one chain connection, with its indexer."""

    def __init__(self, chain: Chain, indexer: Indexer | None = None):
        self.chain = chain
        self.indexer = indexer or Indexer.for_chain(chain)
        self._payout_calls: dict[tuple[Payout, ...], object] = {}  # see payout_call

    def close(self) -> None:
        self.indexer.close()
        self.chain.close()

    def __enter__(self) -> ProtocolClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def state(self) -> State:
        """The protocol state at the finalized head."""
        return self.indexer.sync()

    # -- submission -------------------------------------------------------------------------

    def submit(
        self,
        key,
        remark: bytes,
        transfers: Sequence[tuple[str, int, int | None]] = (),
    ) -> Submitted:
        """Submit ``remark`` (in one batch_all with ``transfers``) and check the outcome."""
        for dest, _, asset in transfers:
            if asset is not None:
                self.ensure_provider(key, dest)
        receipt = self.chain.submit(key, self.compose(remark, transfers))
        return self._outcome(receipt)

    def submit_with(self, key, remark: bytes | Sequence[bytes], calls: Sequence = ()) -> Submitted:
        """Submit ``remark`` (or several remarks, in order: a verdict table's parts and its
        attestation) and then ``calls`` of the signer's own in one extrinsic (a
        ``Utility.batch``: not atomic, so a failing call after the remarks leaves them done;
        the receipt's BatchInterrupted event says which one failed), and check the remarks'
        outcome. One remark without ``calls`` is the same as :meth:`submit`."""
        remarks = [remark] if isinstance(remark, bytes | bytearray) else list(remark)
        if not calls and len(remarks) == 1:
            return self.submit(key, remarks[0])
        batch = [self.chain.remark_call(r) for r in remarks] + list(calls)
        receipt = self.chain.submit(key, self.chain.batch_call(batch))
        return self._outcome(receipt)

    def ensure_provider(self, key, dest: str) -> None:
        """An account can hold a (non-sufficient) Assets token only once it exists in the
        native token: give a new pool its existential deposit first, in an extrinsic of its
        own with no protocol call (a donation the protocol books for nobody, so it is not
        refunded and stays as the pool's native provider)."""
        existential = self.chain.existential_deposit()
        if self.chain.balance(dest).free >= existential:
            return
        self.chain.submit(key, self.chain.transfer_call(dest, existential))

    def compose(self, remark: bytes, transfers: Sequence[tuple[str, int, int | None]] = ()):
        """The chain call carrying ``remark``: alone, or last in one batch_all with the
        ``transfers`` (dest, amount, asset or None) it needs, e.g. a stake's."""
        calls = [self._transfer_call(dest, amount, asset) for dest, amount, asset in transfers]
        remark_call = self.chain.remark_call(remark)
        return self.chain.batch_all_call([*calls, remark_call]) if calls else remark_call

    def replaced(self, receipt: Receipt) -> bool:
        """Whether the block that included ``receipt``'s transaction is no longer the chain's
        block at its height: a dev chain under load can build two blocks at one height and
        keep the other, and the transaction then is in no block the protocol reads."""
        return self.chain.block_hash(receipt.block_number) != receipt.block_hash

    def _outcome(self, receipt: Receipt) -> Submitted:
        state = self.indexer.wait_for(receipt.block_number)
        if self.replaced(receipt):
            # a dev chain under load can build two blocks at one height and keep the other:
            # the transaction then is in no block the protocol reads
            raise ChainError(
                f"block {receipt.block_number}, which included the transaction, was replaced "
                "by another block at that height: the transaction did not take effect",
                hint="check the state (a read shows what happened) and submit it again",
            )
        errors = state.errors_at(receipt.block_number, receipt.extrinsic_index)
        if errors:
            raise ProtocolRejected(
                f"the protocol rejected {errors[0].call}: {errors[0].reason}",
                hint="nothing changed but the fee; see the reason, fix the call and resubmit "
                "(dfml errors lists every rejected call)",
            )
        created = tuple(state.created_by(receipt.block_number, receipt.extrinsic_index))
        return Submitted(receipt, created)

    def _transfer_call(self, dest: str, amount: int, asset: int | None):
        if asset is None:
            return self.chain.transfer_call(dest, amount)
        return self.chain.call(
            "Assets", "transfer_keep_alive", {"id": asset, "target": dest, "amount": amount}
        )

    def _model(self, model_id: int):
        model = self.state().model(model_id)
        if model is None:
            raise NotFound(
                f"no model {model_id} on this chain", hint="list them with: dfml model list"
            )
        return model

    def _pool_model(self, model_id: int):
        """The model, if its pool may take funds: a multisig of two or more validators. The
        protocol refuses funds for any other model, and a transfer into a pool that is one
        person's account could never be refunded, so none is sent."""
        model = self._model(model_id)
        if len(model.validators) < MIN_POOL_SIGNATORIES:
            raise ProtocolError(
                f"model {model_id} has {len(model.validators)} validator(s): its pool would be "
                "one person's account, so it takes no stakes or budgets",
                hint=f"give it at least {MIN_POOL_SIGNATORIES} validators (model submit "
                "--validator, or an AddValidator proposal)",
            )
        return model

    # -- calls ------------------------------------------------------------------------------

    def funding(self, call: Call) -> tuple[Call, list[tuple[str, int, int | None]]]:
        """``call`` as it will be sent, with the transfers that must travel with it in its
        batch, as (dest, amount, asset or None); raises (sending nothing) what the protocol
        would refuse and the client could not get back:

        - a call that pays into its model's pool (``pays_pool()``) for a model with fewer than
          two validators (its pool would be one person's account): ProtocolError;
        - a call of a funded kind (``FUNDED``) naming an unknown model: NotFound;
        - funds named in an asset (``ASSET_FIELD``) other than the model's stake asset:
          ProtocolError. Left None, the call is sent in the model's stake asset.
        """
        model_id = call.target_model()
        if model_id is None:
            return call, []
        if not call.pays_pool():
            if call.FUNDED:
                self._model(model_id)
            return call, []
        model = self._pool_model(model_id)
        asset = model.stake_asset
        if call.ASSET_FIELD is not None:
            named = getattr(call, call.ASSET_FIELD)
            if named is None:
                call = replace(call, **{call.ASSET_FIELD: asset})
            elif named != asset:  # the protocol would refuse it (and owe it back)
                raise ProtocolError(
                    f"model {model_id} takes stakes in {_asset_label(asset)}, "
                    f"not {_asset_label(named)}",
                    hint="leave --asset out: the client uses the model's stake asset",
                )
        return call, [(model.pool, call.funds(), asset)]

    def send(self, key, call: Call) -> Submitted:
        """Send ``call`` signed by ``key``, batched atomically with the transfer its class
        declares (see :meth:`funding` for what is refused before anything is sent; a pool that
        is to receive a non-native asset first gets its existential deposit), and check the
        outcome: raises ProtocolRejected with the protocol's reason if it refused the call."""
        call, transfers = self.funding(call)
        return self.submit(key, encode_call(call), transfers)

    def register_model(self, key, name: str, architecture_cid: str, weights_cid: str, **kw):
        return self.send(key, encoders.registration(name, architecture_cid, weights_cid, **kw))

    def start_training(self, key, model_id: int) -> Submitted:
        return self.send(key, C.StartTraining(model_id))

    def stake(self, key, model_id: int, amount: int, asset_id: int | None = None) -> Submitted:
        """Stake ``amount`` (in the model's stake asset) on the model; it moves into the pool
        in the same batch."""
        return self.send(key, C.Stake(model_id, amount, asset_id))

    def unstake(self, key, model_id: int, amount: int) -> Submitted:
        return self.send(key, C.Unstake(model_id, amount))

    def propose(self, key, target: int | None, action: Action, voting_blocks: int) -> Submitted:
        """Propose ``action``; a StartRound proposal's reward budget moves into the model's
        pool in the same batch (held until the tally, refunded if the round does not start)."""
        return self.send(key, C.Propose(target, action, voting_blocks))

    def vote(self, key, proposal_id: int, aye: bool) -> Submitted:
        return self.send(key, C.Vote(proposal_id, aye))

    def create_task(
        self, key, model_id: int, role: str, reward: int, max_assignments: int,
        duration_blocks: int, **kw,
    ) -> Submitted:  # fmt: skip
        """Create a task; its budget (``reward * max_assignments``) moves into the pool."""
        return self.send(
            key, C.CreateTask(model_id, role, reward, max_assignments, duration_blocks, **kw)
        )

    def assign_task(self, key, task_id: int) -> Submitted:
        return self.send(key, C.AssignTask(task_id))

    def submit_result(self, key, task_id: int, cid: str) -> Submitted:
        return self.send(key, C.SubmitResult(task_id, cid))

    def accept_submission(self, key, submission_id: int) -> Submitted:
        return self.send(key, C.AcceptSubmission(submission_id))

    def reject_submission(self, key, submission_id: int, reason: str = "") -> Submitted:
        return self.send(key, C.RejectSubmission(submission_id, reason))

    def start_round(self, key, model_id: int, spec) -> Submitted:
        """Start a round; its reward budget moves into the model's pool in the same batch."""
        return self.send(key, C.StartRound(model_id, spec))

    def start_rounds(
        self,
        key,
        model_id: int,
        spec,
        rounds: int,
        bounty: int = 0,
        commitment: str | None = None,
    ) -> Submitted:
        """Schedule ``rounds`` rounds run back to back (each opens in the block that ends the
        one before); their whole reward budget (and a prediction market's ``bounty``, with
        its test-set ``commitment``) moves into the pool in the same batch. One round without
        a market is sent as a plain ``start_round``."""
        if commitment is not None:
            market = C.MarketTerms(bounty, commitment)
            return self.send(key, C.StartRounds(model_id, spec, rounds, market))
        one = rounds == 1
        return self.send(
            key, C.StartRound(model_id, spec) if one else C.StartRounds(model_id, spec, rounds)
        )

    def submit_update(self, key, round_id: int, cid: str, num_examples: int) -> Submitted:
        """Submit an update; under the drt policy with the model's deposit, moved into its
        pool in the same batch (refunded after the wait if accepted, taken if rejected)."""
        state = self.state()
        rnd = state.round(round_id)
        model = None if rnd is None else state.model(rnd.model_id)
        deposit = model.deposit if model and model.reward_policy["kind"] == "drt" else 0
        call = C.SubmitUpdate(round_id, cid, num_examples, deposit)
        if not deposit:
            return self.send(key, call)
        assert model is not None
        return self.submit(key, encode_call(call), [(model.pool, deposit, model.stake_asset)])

    def reveal_test_set(self, key, model_id: int, test_cid: str, salt: str) -> Submitted:
        """Reveal a prediction market's test set (after its plan's last round)."""
        return self.send(key, C.RevealTestSet(model_id, test_cid, salt))

    # -- payouts ----------------------------------------------------------------------------

    def payout_call(self, payout: Payout | Sequence[Payout]):
        """The batch_all that executes ``payout`` (or several of one pool, in id order): the
        same call hash for every validator."""
        payouts = sorted([payout] if isinstance(payout, Payout) else payout, key=lambda p: p.id)
        # what is paid (not when or whether it was): a validator asks for the same batch on
        # every step while it is pending, and a round's thousand rewards are 2,000 calls
        key = tuple(replace(p, status="pending", paid_block=None) for p in payouts)
        made = self._payout_calls.get(key)
        if made is None:
            calls = [
                self.chain.call(m, f, p)
                for pay in payouts
                for m, f, p in encoders.payout_calls(pay)
            ]
            made = self.chain.batch_all_call(calls)
            if len(self._payout_calls) >= 64:
                self._payout_calls.clear()
            self._payout_calls[key] = made
        return made

    def approve_payout(self, key, payout_id: int | Sequence[int]) -> Receipt:
        """Approve (or, as the last needed signatory, execute) pending payouts of a pool: one
        id, or several of the same pool paid by one call (a round's rewards: one multisig
        approval per validator instead of one per reward).

        The call is derived from this client's own replay of the chain, so a validator only
        ever approves what the protocol state says is owed.
        """
        call, signatories, threshold = self._payout_call_for(payout_id)
        receipt = self.chain.multisig_approve(key, call, signatories, threshold)
        if not receipt.events_of("Multisig", "MultisigExecuted"):
            return receipt  # an approval; the k-th signatory executes it
        return self._outcome(receipt).receipt

    def payout_approval_call(self, key, payout_id: int | Sequence[int]):
        """The call :meth:`approve_payout` would submit for ``key`` now, for a validator to
        send inside a batch of its own (with its next attestation). Raises ProtocolError for
        payouts that are not owed."""
        call, signatories, threshold = self._payout_call_for(payout_id)
        return self.chain.multisig_approval_call(key, call, signatories, threshold)

    def _payout_call_for(self, payout_id: int | Sequence[int]) -> tuple[object, list[str], int]:
        """The pool's call paying ``payout_id`` (one or several of one pool), its signatories
        and threshold, checked against this client's replay of the chain."""
        ids = [payout_id] if isinstance(payout_id, int) else list(payout_id)
        state = self.state()
        ready = {p.id: p for p in state.pending_payouts(ready_only=True)}
        missing = [i for i in ids if i not in ready]
        if missing or not ids:
            raise ProtocolError(
                f"payout {missing[0] if missing else '(none)'} is not pending (or its pool is "
                "not funded yet)",
                hint="list pending payouts with: dfml payouts --pending",
            )
        payouts = [ready[i] for i in ids]
        first = payouts[0]
        if any(p.pool != first.pool for p in payouts):
            raise ProtocolError(
                f"payouts {ids} are owed by different pools",
                hint="approve each pool's payouts separately",
            )
        signers = state.pool_signers(first.pool)
        if signers is None:
            raise ProtocolError(
                f"payout {first.id} is owed by {first.pool}, which is not a multisig pool",
                hint="only a model's multisig pool (two or more validators) pays out",
            )
        # a former pool is signed by the validators it was made of (migrations, refunds)
        return self.payout_call(payouts), list(signers[0]), signers[1]
