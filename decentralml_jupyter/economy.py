"""The economics of a model's rounds, simulated in-process: no chain, no storage, no TensorFlow.

Workers of several kinds train a multinomial logistic regression on scikit-learn's bundled
digits (split among them, Dirichlet non-IID) for many rounds, and each round is judged the way a
validator judges one (``agents/validator.py``): ``fl.check_update``, the norm outlier filter
(``NORM_OUTLIER_FACTOR`` times the median delta norm), FedAvg of the accepted updates with
claims capped by ``fl.bound_examples``, ``fl.leave_one_out`` contribution shares on the
validators' held-out data (the model's metric is its loss), and the protocol's improvement
rule (a round whose loss is worse than its base's pays nobody; its model is adopted anyway).
Money then moves by one of four policies, and every agent's net balance is recorded per round.

Kinds of worker: ``honest`` (local SGD, ``DEFAULT_LOCAL_EPOCHS`` epochs on all its data),
``lazy`` (one epoch on half its data, and it says so), ``noisy`` (honest, plus Gaussian noise
as large as its update), ``label_flip`` (trains on labels ``9 - y``), ``scale`` (an honest
update's delta times ``scale_factor``) and ``free_rider`` (resubmits the global model and
claims its data). ``label_flip`` and ``scale`` are the adversarial kinds.

Every update costs its worker a fee, and training costs compute (a lazy worker pays less, a free
rider none); a balance is what a worker received minus what it paid and lost. Stakes and
deposits are the worker's own money while they are held: only what is slashed or taken counts.

Policies:

``proportional`` and ``equal``: the protocol of today (``protocol/state/rounds.py``,
``_finalize``). The owner's budget of a round is split among its accepted updates by their
contribution shares, or equally; a rejected update is slashed ``slash_permill`` of its worker's
stake, and the slashed stake joins the round's pot, so it goes to that round's contributors. A
round in which every update fails the checks, or whose model is no better than its base,
slashes nobody (the protocol's rule: a slash there could only go back to the round's starter,
a perverse incentive) and its budget goes back.

``drt`` (deposit, refund and take): every update carries ``deposit``. The round's budget is
split as in ``proportional``. After ``wait`` rounds each deposit is settled: an accepted update
whose leave-one-out gain on the held-out data was not negative is refunded; one that failed the
checks or made the aggregate worse is taken, and the round's taken deposits are shared among
its updates with a positive gain, in proportion to their gains (nobody good: they are burned;
never paid to the owner or the validators). Deposits still waiting at the end are settled in
the last round's balances.

``prediction-market``: the owner posts a bounty of ``round_reward`` times the number of rounds
for the whole plan and commits to a hidden test set (here the dataset's test split). Every
update carries ``deposit``; rounds run and are judged as usual, but nothing is paid until the
plan ends. Then the test set is revealed: each round's improvement of the model's test loss
earns that round a part of the bounty in proportion to its improvement (a round that made the
model worse earns nothing), split among its accepted updates by their leave-one-out gain on the
test set. A rejected update, or an accepted one whose test gain is negative, loses its deposit
to that round's contributors with a positive gain (none: burned); the rest are refunded. What no
round earned goes back to the owner. All of this lands in the last round's balances.

``rules="chain"`` (``dfml economy simulate --rules chain``) pays ``drt`` and
``prediction-market`` as the protocol does instead (``protocol/PROTOCOL.md``, "Deposits" and
"Prediction markets"), so that a run predicts the chain. ``drt``: only the deposits of updates
the validators rejected are taken, at the verdict, beside the slashes (a rejected update is
slashed as under ``proportional``); the round's pot (budget, slashes and taken deposits) is
split by contribution share; a round that does not improve the model gives its budget back and
its taken deposits to its contributors; a round with no update accepted gives every deposit
back; nothing is burned. The chain cannot take the deposit of an accepted update that hurt the
model: its attestations carry contribution scores clipped at zero. ``prediction-market``:
rounds pay as ``proportional``; updates carry no deposit; the bounty (``round_reward`` times
the rounds, on top of the rounds' budgets) is paid at the reveal to the contributors of the
rounds that paid anyone, each weighing the sum over its rounds of the round's test-loss
improvement (none if it got worse) times its contribution share; nobody weighing anything: it
goes back to the owner.

In every policy an update that carries no work (its delta is zero, or below the median delta
norm divided by ``NORM_OUTLIER_FACTOR``) is aggregated like any accepted update but earns
nothing: zero contribution, zero reward. With the fee, a free rider never profits. The protocol
itself does not have this rule yet.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import UsageError
from .fl.checks import bound_examples, check_update, delta_norm
from .fl.contribution import leave_one_out
from .fl.strategies import FedAvg
from .fl.types import DEFAULT_LOCAL_EPOCHS, ClientUpdate, Weights

POLICIES = ("proportional", "equal", "drt", "prediction-market")
RULES = ("paper", "chain")  # drt and prediction-market as published, or as the protocol pays
ADVERSARIAL_KINDS = ("label_flip", "scale")
KINDS = ("honest", "lazy", "noisy", *ADVERSARIAL_KINDS, "free_rider")
# how each kind is reported in ``balances``: adversarial kinds together (and apart in
# ``adversarial_kinds``)
GROUP = {kind: "adversarial" if kind in ADVERSARIAL_KINDS else kind for kind in KINDS}
MAX_ROUNDS = 1000
MAX_AGENTS = 100


@dataclass(frozen=True)
class Economics:
    """The money of a simulation, in tokens (the protocol counts integers of the chain's
    smallest unit; here floats are enough)."""

    round_reward: float = 50.0  # the owner's budget of a round (prediction market: per round)
    fee: float = 0.2  # the chain's fee for submitting an update
    compute: float = 1.0  # what a full local training costs its worker
    stake: float = 100.0  # each worker's stake (slashed under proportional, equal; on chain all)
    slash_permill: int = 100_000  # share of the stake slashed for a rejected update (ppm)
    deposit: float = 5.0  # carried by every update (drt; prediction market by the paper's rules)
    wait: int = 3  # rounds before a deposit is settled (drt by the paper's rules)

    def check(self) -> None:
        for name in ("round_reward", "fee", "compute", "stake", "deposit"):
            if not (math.isfinite(getattr(self, name)) and getattr(self, name) >= 0):
                raise UsageError(f"{name} must be a finite amount >= 0", hint="e.g. 1.0")
        if not 0 <= self.slash_permill <= 1_000_000:
            raise UsageError("slash_permill must be within 0..1000000", hint="e.g. 100000")
        if self.wait < 0:
            raise UsageError("wait must be 0 or more rounds", hint="e.g. 3")


@dataclass(frozen=True)
class Simulation:
    """What ``simulate`` returns; ``to_json()`` is the JSON of ``dfml economy simulate``."""

    policy: str
    rules: str  # "paper" or "chain" (see RULES)
    rounds: int
    balances: dict[str, list[float]]  # per round, the average net balance of each kind
    accuracy: list[float]  # per round, the global model's accuracy on the test split
    adversarial_kinds: dict[str, list[float]]
    agents: dict[str, int]
    seed: int
    economics: Economics
    owner_spent: float  # what the owner paid out, net of budget and bounty given back

    def to_json(self) -> dict[str, Any]:
        return {
            "policy": self.policy,
            "rules": self.rules,
            "rounds": self.rounds,
            "balances": self.balances,
            "accuracy": self.accuracy,
            "adversarial_kinds": self.adversarial_kinds,
            "agents": self.agents,
            "seed": self.seed,
            "economics": dataclasses.asdict(self.economics),
            "owner_spent": self.owner_spent,
        }


# -- the model: multinomial logistic regression in numpy ---------------------------------------


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def evaluate(weights: Weights, x: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """The model's ``loss`` (mean cross-entropy) and ``accuracy`` on ``(x, y)``."""
    w, b = (np.asarray(a, dtype=np.float64) for a in weights)
    p = _softmax(x @ w + b)
    picked = np.clip(p[np.arange(len(y)), y], 1e-12, 1.0)
    return {
        "loss": float(-np.mean(np.log(picked))),
        "accuracy": float(np.mean(p.argmax(axis=1) == y)),
    }


def _sgd(
    weights: Weights,
    x: np.ndarray,
    y: np.ndarray,
    epochs: int,
    rng: np.random.Generator,
    lr: float = 0.1,
    batch: int = 16,
) -> Weights:
    w, b = (np.array(a, dtype=np.float64) for a in weights)
    for _ in range(epochs):
        order = rng.permutation(len(x))
        for start in range(0, len(x), batch):
            idx = order[start : start + batch]
            g = _softmax(x[idx] @ w + b)
            g[np.arange(len(idx)), y[idx]] -= 1.0
            g /= len(idx)
            w -= lr * (x[idx].T @ g)
            b -= lr * g.sum(axis=0)
    return [w.astype(np.float32), b.astype(np.float32)]


# -- workers ---------------------------------------------------------------------------------


@dataclass
class _Agent:
    id: str
    kind: str
    x: np.ndarray
    y: np.ndarray
    rng: np.random.Generator
    stake: float = 0.0
    balance: float = 0.0

    def update(
        self, base: Weights, classes: int, scale_factor: float, econ: Economics
    ) -> ClientUpdate:
        """This round's update (full weights, as workers send them); pays its fee and
        compute."""
        kind, n = self.kind, len(self.x)
        self.balance -= econ.fee
        if kind == "free_rider":
            return ClientUpdate(self.id, [a.copy() for a in base], n)
        if kind == "lazy":
            self.balance -= econ.compute * 0.2
            half = max(1, n // 2)
            pick = self.rng.choice(n, half, replace=False)
            return ClientUpdate(self.id, _sgd(base, self.x[pick], self.y[pick], 1, self.rng), half)
        self.balance -= econ.compute
        labels = classes - 1 - self.y if kind == "label_flip" else self.y
        weights = _sgd(base, self.x, labels, DEFAULT_LOCAL_EPOCHS, self.rng)
        if kind in ("noisy", "scale"):
            deltas = [np.asarray(w, np.float64) - g for w, g in zip(weights, base, strict=True)]
            if kind == "noisy":  # noise about as large as the update itself
                sigma = delta_norm(base, weights) / math.sqrt(sum(d.size for d in deltas))
                deltas = [d + self.rng.normal(0.0, sigma, d.shape) for d in deltas]
            else:
                deltas = [d * scale_factor for d in deltas]
            weights = [(g + d).astype(np.float32) for g, d in zip(base, deltas, strict=True)]
        return ClientUpdate(self.id, weights, n)


# -- the validators' judgement ---------------------------------------------------------------


@dataclass
class Verdict:
    """A round judged as a validator judges it: the new weights, the accepted updates (claims
    capped), the rejected ones with reasons, contribution shares and raw leave-one-out gains
    on the held-out data, the updates that carry no work, and whether the round improved."""

    weights: Weights
    accepted: list[ClientUpdate]
    rejected: dict[str, str]
    shares: dict[str, float]
    gains: dict[str, float]
    no_work: set[str]
    improved: bool


def gains(base: Weights, updates: Sequence[ClientUpdate], loss) -> dict[str, float]:
    """Each update's raw leave-one-out gain: the loss of the FedAvg of the others (the base
    when there are none), minus the loss of the FedAvg of all; positive: it helped.
    ``fl.leave_one_out`` gives these clipped at zero and normalised (the shares that split a
    pot); deposits need their signs."""

    def loss_of(subset: list[ClientUpdate]) -> float:
        return loss(FedAvg().aggregate(base, subset) if subset else base)

    full = loss_of(list(updates))
    return {u.client_id: loss_of([v for v in updates if v is not u]) - full for u in updates}


def judge(
    base: Weights, updates: Sequence[ClientUpdate], x_val: np.ndarray, y_val: np.ndarray
) -> Verdict:
    """Checks, the norm outlier filter, FedAvg, contributions and the improvement rule, as
    ``agents/validator.py`` applies them to a round (``Validator._judge``)."""
    from .agents.validator import NORM_OUTLIER_FACTOR

    def ev(weights: Weights) -> dict[str, float]:
        return evaluate(weights, x_val, y_val)

    def loss(weights: Weights) -> float:
        return ev(weights)["loss"]

    accepted, rejected, norms = [], {}, {}
    for u in sorted(updates, key=lambda u: u.client_id):
        check = check_update(base, u)
        if check.accepted:
            accepted.append(u)
            norms[u.client_id] = check.delta_norm
        else:
            rejected[u.client_id] = check.reason
    floor = 0.0
    if len(accepted) >= 3:
        median = statistics.median(norms.values())
        floor = median / NORM_OUTLIER_FACTOR
        for u in [u for u in accepted if norms[u.client_id] > NORM_OUTLIER_FACTOR * median]:
            accepted.remove(u)
            rejected[u.client_id] = f"update norm exceeds {NORM_OUTLIER_FACTOR:g}x the median"
    if not accepted:
        return Verdict(base, [], rejected, {}, {}, set(), False)
    accepted = bound_examples(accepted)
    weights = FedAvg().aggregate(base, accepted)
    no_work = {u.client_id for u in accepted if norms[u.client_id] <= floor}
    return Verdict(
        weights,
        accepted,
        rejected,
        leave_one_out(FedAvg(), base, accepted, ev, metric="loss"),
        gains(base, accepted, loss),
        no_work,
        loss(weights) <= loss(base),
    )


# -- paying ----------------------------------------------------------------------------------


def _split(pot: float, weights: dict[str, float]) -> dict[str, float]:
    """``pot`` in proportion to the positive ``weights`` (all zero: equally among them)."""
    if not weights or pot <= 0:
        return {}
    total = math.fsum(weights.values())
    if total <= 0:
        return {a: pot / len(weights) for a in weights}
    return {a: pot * w / total for a, w in weights.items()}


class _Books:
    """Who received and paid what; the owner's net spending."""

    def __init__(self, agents: dict[str, _Agent]):
        self.agents = agents
        self.owner_spent = 0.0

    def pay(self, amounts: dict[str, float]) -> float:
        for a, amount in amounts.items():
            self.agents[a].balance += amount
        return math.fsum(amounts.values())

    def pay_owner_pot(self, pot: float, amounts: dict[str, float]) -> None:
        """The owner's pot paid to ``amounts`` (what is not paid stays the owner's)."""
        self.owner_spent += min(pot, self.pay(amounts))

    def take_deposits(self, losers: Sequence[str], winners: dict[str, float], deposit: float):
        """Deposits of ``losers`` taken and shared among ``winners`` by their weights
        (nobody: burned)."""
        for a in losers:
            self.agents[a].balance -= deposit
        self.pay(_split(deposit * len(losers), winners))


def _credited(v: Verdict, weights: dict[str, float]) -> dict[str, float]:
    """``weights`` of the accepted updates that did work and have a positive weight."""
    return {a: w for a, w in weights.items() if a not in v.no_work and w > 0}


def _slash(books: _Books, v: Verdict, econ: Economics) -> float:
    """Each rejected update's worker slashed ``slash_permill`` of its stake; the total."""
    slashed = 0.0
    for a in v.rejected:
        agent = books.agents[a]
        amount = agent.stake * econ.slash_permill / 1_000_000
        agent.stake -= amount
        agent.balance -= amount
        slashed += amount
    return slashed


def _stake_policy(books: _Books, v: Verdict, econ: Economics, equal: bool) -> None:
    if not v.accepted or not v.improved:
        return  # nobody slashed or paid; the budget goes back
    slashed = _slash(books, v, econ)
    worked = [u.client_id for u in v.accepted if u.client_id not in v.no_work]
    weights = dict.fromkeys(worked, 1.0) if equal else _credited(v, v.shares)
    # nobody to pay (every accepted update did no work): the budget goes back, the slashes
    # stay in the pool
    books.pay_owner_pot(econ.round_reward, _split(econ.round_reward + slashed, weights))


def _drt_round(books: _Books, v: Verdict, econ: Economics) -> None:
    """The budget of a round: as ``proportional``."""
    if v.accepted and v.improved:
        books.pay_owner_pot(econ.round_reward, _split(econ.round_reward, _credited(v, v.shares)))


def _drt_chain(books: _Books, v: Verdict, econ: Economics) -> None:
    """A round under the protocol's ``drt``: rejected updates' deposits taken at the verdict."""
    if not v.accepted:
        return  # the round failed: every deposit and the budget back, nobody slashed
    for a in v.rejected:
        books.agents[a].balance -= econ.deposit
    weights = _credited(v, v.shares)
    if v.improved:  # else the budget goes back, and nobody is slashed
        pot = econ.round_reward + _slash(books, v, econ)
        books.pay_owner_pot(econ.round_reward, _split(pot, weights))
    # the taken deposits to the contributors, never the starter; where the simulator's own
    # no-work rule credits nobody, the chain's scores still split them among the accepted
    accepted = weights or dict.fromkeys((u.client_id for u in v.accepted), 1.0)
    books.pay(_split(econ.deposit * len(v.rejected), accepted))


def _settle_deposits(books: _Books, v: Verdict, by_gain: dict[str, float], econ) -> None:
    """Deposits of a round: taken from rejected updates and from accepted ones with a
    negative gain, shared among those with a positive gain."""
    losers = sorted(v.rejected) + sorted(a for a, g in by_gain.items() if g < 0)
    books.take_deposits(losers, _credited(v, by_gain), econ.deposit)


def _prediction_market(
    books: _Books,
    history: list[tuple[Weights, Verdict]],
    x_test: np.ndarray,
    y_test: np.ndarray,
    econ: Economics,
    chain: bool,
) -> None:
    """The plan's end: the test set revealed and the bounty paid by each round's improvement.
    By the paper's rules, split by each update's gain on the test set, which also settles the
    deposits; by the chain's, to the contributors of the rounds that paid anyone, weighing
    each round's improvement times their contribution shares (nobody weighing anything: back
    to the owner)."""

    def loss(weights: Weights) -> float:
        return evaluate(weights, x_test, y_test)["loss"]

    bounty = econ.round_reward * len(history)
    improvements = [max(0.0, loss(base) - loss(v.weights)) for base, v in history]
    if chain:
        weights: dict[str, float] = {}
        for (_, v), improvement in zip(history, improvements, strict=True):
            shares = _credited(v, v.shares)
            if not (v.accepted and v.improved and shares):
                continue  # the round rewarded nobody: not in the market
            for a, share in shares.items():
                weights[a] = weights.get(a, 0.0) + improvement * share
        books.pay_owner_pot(bounty, _split(bounty, {a: w for a, w in weights.items() if w > 0}))
        return
    total = math.fsum(improvements)
    for (base, v), improvement in zip(history, improvements, strict=True):
        test_gains = gains(base, v.accepted, loss)
        pot = bounty * improvement / total if total > 0 else 0.0
        books.pay_owner_pot(pot, _split(pot, _credited(v, test_gains)))
        _settle_deposits(books, v, test_gains, econ)


# -- the simulation --------------------------------------------------------------------------


def _count(name: str, value: int, most: int = MAX_AGENTS) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= most:
        raise UsageError(f"{name} must be a whole number from 0 to {most}, not {value!r}")
    return value


def simulate(
    policy: str,
    honest: int = 10,
    adversarial: int = 4,
    free_riders: int = 2,
    rounds: int = 30,
    seed: int = 0,
    *,
    lazy: int = 0,
    noisy: int = 0,
    kinds: Sequence[str] = ADVERSARIAL_KINDS,
    economics: Economics | None = None,
    scale_factor: float = 10.0,
    alpha: float = 1.0,
    rules: str = "paper",
) -> Simulation:
    """Run ``rounds`` rounds under ``policy`` with that many workers of each kind (the
    adversarial ones take ``kinds`` in turn) and return the per-round balances and accuracy.
    ``rules``: ``drt`` and ``prediction-market`` as published (``paper``) or as the protocol
    pays them (``chain``). Deterministic for a given ``seed``."""
    from .fl.data import load_dataset, partition

    if policy not in POLICIES:
        raise UsageError(f"unknown policy {policy!r}", hint=f"one of {', '.join(POLICIES)}")
    if rules not in RULES:
        raise UsageError(f"unknown rules {rules!r}", hint=f"one of {', '.join(RULES)}")
    chain = rules == "chain"
    counts = {
        "honest": _count("honest", honest),
        "lazy": _count("lazy", lazy),
        "noisy": _count("noisy", noisy),
        "adversarial": _count("adversarial", adversarial),
        "free_rider": _count("free_riders", free_riders),
    }
    _count("rounds", rounds, MAX_ROUNDS)
    _count("seed", seed, 2**32 - 1)
    if rounds < 1 or sum(counts.values()) < 1:
        raise UsageError("a simulation needs at least one round and one worker")
    kinds = list(kinds)
    if not kinds or any(k not in ADVERSARIAL_KINDS for k in kinds):
        raise UsageError(
            f"unknown adversarial kinds {kinds!r}", hint=f"from {', '.join(ADVERSARIAL_KINDS)}"
        )
    econ = economics or Economics()
    econ.check()
    if not (math.isfinite(scale_factor) and math.isfinite(alpha) and alpha > 0):
        raise UsageError("scale_factor must be finite and alpha positive")

    ds = load_dataset("digits", seed=seed)
    roster = (
        ["honest"] * counts["honest"]
        + ["lazy"] * counts["lazy"]
        + ["noisy"] * counts["noisy"]
        + [kinds[i % len(kinds)] for i in range(counts["adversarial"])]
        + ["free_rider"] * counts["free_rider"]
    )
    rng = np.random.default_rng(seed)
    parts = partition(ds.y_train, len(roster), "dirichlet", alpha=alpha, seed=seed)
    order = rng.permutation(len(roster))  # which kind gets which share of the data
    agents = {}
    for i, kind in enumerate(roster):
        idx = parts[order[i]]
        agent_id = f"agent-{i:03d}"
        child = np.random.default_rng([seed, i])
        agents[agent_id] = _Agent(
            agent_id, kind, ds.x_train[idx], ds.y_train[idx], child, stake=econ.stake
        )
    books = _Books(agents)
    classes, dim = ds.num_classes, ds.input_dim
    weights: Weights = [np.zeros((dim, classes), np.float32), np.zeros(classes, np.float32)]

    history: list[tuple[Weights, Verdict]] = []
    waiting: list[tuple[int, Verdict]] = []  # drt: deposits settled at that round
    per_agent: dict[str, list[float]] = {a: [] for a in agents}
    accuracy: list[float] = []
    for r in range(rounds):
        base = weights
        updates = [a.update(base, classes, scale_factor, econ) for a in agents.values()]
        v = judge(base, updates, ds.x_val, ds.y_val)
        history.append((base, v))
        if policy in ("proportional", "equal") or (chain and policy == "prediction-market"):
            _stake_policy(books, v, econ, equal=policy == "equal")
        elif policy == "drt" and chain:
            _drt_chain(books, v, econ)
        elif policy == "drt":
            _drt_round(books, v, econ)
            waiting.append((r + econ.wait, v))
        weights = v.weights
        last = r == rounds - 1
        for _, due in [w for w in waiting if w[0] <= r or last]:
            _settle_deposits(books, due, due.gains, econ)
        waiting = [w for w in waiting if w[0] > r and not last]
        if last and policy == "prediction-market":
            _prediction_market(books, history, ds.x_test, ds.y_test, econ, chain)
        accuracy.append(round(evaluate(weights, ds.x_test, ds.y_test)["accuracy"], 6))
        for a, agent in agents.items():
            per_agent[a].append(agent.balance)

    def mean(kinds_of: set[str]) -> list[float]:
        ids = [a for a, agent in agents.items() if agent.kind in kinds_of]
        if not ids:
            return [0.0] * rounds
        return [round(float(np.mean([per_agent[a][r] for a in ids])), 6) for r in range(rounds)]

    balances = {
        group: mean({k for k in KINDS if GROUP[k] == group})
        for group in ("honest", "lazy", "noisy", "adversarial", "free_rider")
        if group in ("honest", "adversarial", "free_rider") or counts[group]
    }
    return Simulation(
        policy=policy,
        rules=rules,
        rounds=rounds,
        balances=balances,
        accuracy=accuracy,
        adversarial_kinds={k: mean({k}) for k in dict.fromkeys(kinds)},
        agents={kind: roster.count(kind) for kind in KINDS if kind in roster},
        seed=seed,
        economics=econ,
        owner_spent=round(books.owner_spent, 6),
    )


def plot(result: Simulation | dict[str, Any], title: str | None = None):
    """A matplotlib Figure: each kind's average net balance per round, and the model's
    accuracy. ``result``: a ``Simulation`` or its JSON (what ``dfml economy simulate --json``
    prints)."""
    from matplotlib.figure import Figure  # no pyplot: no backend, no global figure

    data = result.to_json() if isinstance(result, Simulation) else result
    fig = Figure(figsize=(10, 4), layout="constrained")
    money, acc = fig.subplots(1, 2)
    rounds = range(1, data["rounds"] + 1)
    for kind, values in data["balances"].items():
        money.plot(rounds, values, label=kind.replace("_", " "))
    money.axhline(0.0, color="grey", linewidth=0.8)
    money.set(xlabel="round", ylabel="average net balance", title="balances")
    money.legend()
    acc.plot(rounds, data["accuracy"], color="black")
    acc.set(xlabel="round", ylabel="test accuracy", title="the model", ylim=(0, 1))
    rules = ", as the chain pays it" if data.get("rules") == "chain" else ""
    fig.suptitle(title or f"policy: {data['policy']}{rules}")
    return fig


__all__ = [
    "ADVERSARIAL_KINDS",
    "Economics",
    "KINDS",
    "POLICIES",
    "RULES",
    "Simulation",
    "Verdict",
    "evaluate",
    "gains",
    "judge",
    "plot",
    "simulate",
]
