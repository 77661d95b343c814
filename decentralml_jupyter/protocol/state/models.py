"""``ModelHandlers``: registering a model and starting its training, and the custody rules of
its pool (a model takes funds only once its pool is a multisig of at least
``MIN_POOL_SIGNATORIES`` validators; every such pool is remembered with its signatories).
"""

from __future__ import annotations

from .. import calls as C
from ..accounts import account_id, pool_threshold
from ..values import CallContext
from .payouts import Books
from .records import MIN_POOL_SIGNATORIES, _Model, _Reject, _require


class ModelHandlers(Books):
    """Model calls and pool custody."""

    def _custodial(self, m: _Model) -> None:
        """Refuse funds for a model whose pool one person would hold."""
        _require(
            len(m.validators) >= MIN_POOL_SIGNATORIES,
            f"model {m.id} has {len(m.validators)} validator(s): its pool would be one "
            f"person's account, so it takes no funds until it has {MIN_POOL_SIGNATORIES} "
            "(a multisig nobody controls alone)",
        )

    def _record_pool(self, m: _Model) -> None:
        """Remember who signs for the model's pool, for as long as it may hold anything."""
        if len(m.validators) < MIN_POOL_SIGNATORIES:
            return
        info = self._pools.setdefault(
            m.pool,
            {
                "signatories": list(m.validators),
                "threshold": pool_threshold(len(m.validators)),
                "models": [],
            },
        )
        if m.id not in info["models"]:
            info["models"].append(m.id)
            info["models"].sort()

    def _register_model(self, ctx: CallContext, c: C.RegisterModel) -> tuple[str, int]:
        params = _strategy_params(c.strategy, c.strategy_params)
        problem = _deposit_problem(c.reward_policy.kind, c.deposit)
        _require(problem is None, str(problem))
        mid = self._take_id("model")
        policy = c.reward_policy.to_json()
        del policy["type"]
        self._models[mid] = _Model(
            id=mid,
            owner=ctx.signer,
            name=c.name,
            description=c.description,
            architecture_cid=c.architecture_cid,
            weights_cid=c.weights_cid,
            metric=c.metric,
            licence=c.licence,
            jurisdictions=list(c.jurisdictions),
            strategy=c.strategy,
            reward_policy=policy,
            stake_asset=c.stake_asset,
            validators=sorted(c.validators, key=account_id),
            eligibility={"type": "anyone"},
            status="proposed",
            global_cid=c.weights_cid,
            round=0,
            created_block=ctx.block_number,
            created_extrinsic=ctx.extrinsic_index,
            strategy_params=params,
            improvement=_rule_json(c.improvement),
            deposit=c.deposit,
        )
        self._record_pool(self._models[mid])
        return ("model", mid)

    def _start_training(self, ctx: CallContext, c: C.StartTraining) -> None:
        m = self._model(c.model_id)
        _require(ctx.signer == m.owner, f"only the owner of model {m.id} can start training")
        _require(m.status == "approved", f"model {m.id} is {m.status}, not approved")
        _require(
            len(m.validators) >= MIN_POOL_SIGNATORIES,
            f"model {m.id} has {len(m.validators)} validator(s); training needs "
            f"{MIN_POOL_SIGNATORIES} (its pool must be a multisig)",
        )
        m.status = "training"


def _strategy_params(strategy: str, params: tuple[C.StrategyParam, ...]) -> dict:
    """A model's strategy and parameters checked by the rules of ``fl.strategies`` (a known
    strategy, ``:secure`` only on a linear one, each parameter known and in range, none
    twice); refused with the reason otherwise."""
    from ...errors import FlError
    from ...fl.strategies import check_params

    names = [p.name for p in params]
    _require(len(set(names)) == len(names), "a strategy parameter is given twice")
    try:
        return check_params(strategy, {p.name: p.value for p in params})
    except FlError as err:
        raise _Reject(f"{err}; {err.hint}") from err


def _deposit_problem(kind: str, deposit: int) -> str | None:
    """Why a model cannot have reward policy ``kind`` with ``deposit``, or None: drt needs a
    deposit (with none, a rejected update would cost nothing)."""
    if kind == "drt" and deposit <= 0:
        return "the drt policy needs a deposit above 0 (model submit --deposit AMOUNT)"
    return None


def _rule_json(rule: C.ImprovementRule | None) -> dict | None:
    if rule is None:
        return None
    out = rule.to_json()
    del out["type"]
    return out
