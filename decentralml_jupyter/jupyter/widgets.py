"""Notebook widgets: accounts, proposals with vote buttons, a model card and a live round
dashboard. Each reads and acts through a `Session` (by default the kernel's, the one `%dfml`
uses) and renders the typed values it returns (`set_data`/`update`), so rendering is testable
alone.
"""

from __future__ import annotations

import html
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import ipywidgets as w

from ..errors import DfmlError, UsageError
from . import svg
from .kernel import current_session
from .results import _CSS, AMOUNT_KEYS, receipt_html, table_html, value_html

if TYPE_CHECKING:
    from ..protocol.values import ModelInfo, ProposalInfo, RoundInfo, StakeInfo
    from ..receipts import AccountBalance
    from ..session import Session

FINAL_ROUND_STATES = ("finalized", "failed")


def _error_html(err: BaseException) -> str:
    hint = getattr(err, "hint", "")
    text = f'<span class="dfml-bad"><b>{html.escape(type(err).__name__)}</b>: '
    text += f"{html.escape(str(err))}</span>"
    return text + (f"<br><small>hint: {html.escape(hint)}</small>" if hint else "")


class _Widget(w.VBox):
    """Shared plumbing: the session, a status line for errors and receipts, and safe calls."""

    def __init__(self, session: Session | None = None, **kwargs: Any) -> None:
        self._session = session
        self.status = w.HTML()
        super().__init__(**kwargs)

    @property
    def session(self) -> Session:
        """The widget's Session: the one it was given, else the kernel's at each call (so
        `%config DFMLMagics.key = "//Bob"` makes a vote button vote as Bob)."""
        return self._session if self._session is not None else current_session()

    def token(self) -> Any:
        """The chain's token ({"symbol", "decimals"}) to show amounts in, or None."""
        try:
            return self.session.token()
        except DfmlError:
            return None

    def shown(self, value: Any) -> Any:
        """A typed value as the CLI shows it: plain data, every address in the chain's SS58
        format once the session is connected (the protocol's state spells them in 42)."""
        from ..cli import shown

        return shown(value, self.session)

    def call(self, fn: Callable[[Session], Any]) -> Any:
        """``fn(session)``; on failure show the error (message and hint) and return None."""
        try:
            return fn(self.session)
        except DfmlError as err:
            self.status.value = _CSS + _error_html(err)
            return None


# -- accounts -------------------------------------------------------------------------------


class AccountsWidget(_Widget):
    """The dev accounts and their balances (`account list`), and the stakes (`stakes`)."""

    def __init__(self, session: Session | None = None, load: bool = True, **kwargs: Any) -> None:
        super().__init__(session, **kwargs)
        self.table = w.HTML()
        self.stakes_table = w.HTML()
        self.refresh_button = w.Button(description="Refresh", icon="refresh")
        self.refresh_button.on_click(lambda _b: self.refresh())
        self.accounts: list[dict] = []
        self.stakes: list[dict] | None = None
        self.children = [self.refresh_button, self.table, self.stakes_table, self.status]
        if load:
            self.refresh()

    def refresh(self) -> None:
        accounts = self.call(lambda s: s.accounts())
        if accounts is None:
            return
        stakes = self.call(lambda s: s.stakes())
        self.status.value = ""
        self.set_data(accounts, stakes)

    def set_data(
        self, accounts: Sequence[AccountBalance], stakes: Sequence[StakeInfo] | None = None
    ) -> None:
        self.accounts = self.shown(list(accounts))
        self.stakes = None if stakes is None else self.shown(list(stakes))
        token = self.token() if self._session is not None or self.accounts else None
        self.table.value = _CSS + "<b>Accounts</b>" + table_html(self.accounts, token)
        self.stakes_table.value = (
            "" if self.stakes is None else _CSS + "<b>Stakes</b>" + table_html(self.stakes, token)
        )


# -- proposals ------------------------------------------------------------------------------


class ProposalsWidget(_Widget):
    """Proposals (`proposals`) with Aye and Nay buttons on open ones (`vote ID aye|nay`)."""

    def __init__(
        self,
        session: Session | None = None,
        open_only: bool = False,
        load: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(session, **kwargs)
        self.open_only = open_only
        self.proposals: list[dict] = []
        self.buttons: dict[str, tuple[w.Button, w.Button]] = {}
        self.grid = w.GridBox(layout=w.Layout(grid_template_columns="repeat(8, auto)"))
        self.refresh_button = w.Button(description="Refresh", icon="refresh")
        self.refresh_button.on_click(lambda _b: self.refresh())
        self.last_vote: Any = None
        self.children = [self.refresh_button, self.grid, self.status]
        if load:
            self.refresh()

    def refresh(self) -> None:
        proposals = self.call(lambda s: s.proposals(open_only=self.open_only))
        if proposals is not None:
            self.set_data(proposals)

    def set_data(self, proposals: Sequence[ProposalInfo]) -> None:
        self.proposals = self.shown(list(proposals))
        token = self.token() if self.proposals else None
        self.buttons = {}
        columns = ("id", "kind", "target", "status", "ayes", "nays", "deadline")
        cells: list[w.Widget] = [w.HTML(f"<b>{c}</b>") for c in columns] + [w.HTML("<b>vote</b>")]
        for p in self.proposals:
            cells += [w.HTML(value_html(p.get(c), token, c in AMOUNT_KEYS)) for c in columns]
            pid = str(p.get("id"))
            if p.get("status") == "open":
                aye = w.Button(description="Aye", button_style="success", tooltip=f"aye on {pid}")
                nay = w.Button(description="Nay", button_style="danger", tooltip=f"nay on {pid}")
                aye.on_click(lambda _b, pid=pid: self.vote(pid, "aye"))
                nay.on_click(lambda _b, pid=pid: self.vote(pid, "nay"))
                self.buttons[pid] = (aye, nay)
                cells.append(w.HBox([aye, nay]))
            else:
                cells.append(w.HTML("—"))
        if not self.proposals:
            cells.append(w.HTML("<em>no proposals</em>"))
        self.grid.children = cells

    def vote(self, proposal_id: str | int, choice: str) -> Any:
        """Vote as `%dfml vote` does, show the receipt, and reload the list."""
        pid = str(proposal_id)
        for button in self.buttons.get(pid, ()):
            button.disabled = True  # one vote per click while the transaction is in flight
        result = self.call(lambda s: s.vote(int(pid), choice == "aye"))
        self.last_vote = result
        if result is None:
            for button in self.buttons.get(pid, ()):
                button.disabled = False
            return None
        self.refresh()
        self.status.value = (
            _CSS + f"{html.escape(choice)} on proposal {html.escape(pid)}: "
            f"{receipt_html(result.receipt.to_json())}"
        )
        return result


# -- model card -----------------------------------------------------------------------------


def _metric_points(history: Sequence[Mapping], metric: str) -> list[tuple[float, float]]:
    """(round number, value) of ``metric`` over rounds shaped as `round status` shows them."""
    points = []
    for i, r in enumerate(history):
        value = (r.get("metrics") or {}).get(metric)
        if isinstance(value, int | float):
            x = r.get("number") or r.get("round_id") or i + 1
            points.append((float(x), value))
    return points


def plotted_metrics(metrics: Iterable[Mapping[str, Any]]) -> list[str]:
    """The metrics worth a plot among rounds' ``metrics``: each by its Keras name, the model's
    own first and the loss last; not the ppm integers the chain carries, not the base model's
    (``base_*``), and not accuracy where the model reports a metric of its own (validators
    then send 0 for accuracy)."""
    names: list[str] = []
    for m in metrics:
        own = "metric_ppm" in m
        for k, v in m.items():
            if (
                k in names
                or k.endswith("_ppm")
                or k.startswith("base_")
                or (own and k == "accuracy")
                or not isinstance(v, int | float)
            ):
                continue
            names.append(k)
    return sorted(names, key=lambda k: (k == "loss", k))


def _strategy_text(m: Mapping[str, Any]) -> str | None:
    """``fedadam (eta 0.05, beta_1 0.9, ...)``: the strategy with its settings in effect."""
    params = {k: v for k, v in (m.get("strategy_params") or {}).items() if v is not None}
    settings = ", ".join(f"{k} {v:g}" for k, v in params.items())
    return f"{m.get('strategy')} ({settings})" if settings else m.get("strategy")


def _improvement_text(m: Mapping[str, Any]) -> str | None:
    rule = m.get("improvement") or {}
    if not rule:
        return None
    metric = m.get("metric", "metric")
    tolerance = rule.get("tolerance", 0)
    worse = f"worse by at most {tolerance:g}" if tolerance else "no worse"
    otherwise = "adopted unpaid" if rule.get("unimproved") == "adopt" else "not adopted"
    return f"the new model's {metric} is {worse} than before (else: {otherwise})"


def _privacy_text(privacy: Mapping[str, Any] | None) -> str | None:
    """The DP budget spent, e.g. ``epsilon 3.2 at delta 1e-05 (the most any of 4 workers
    spent)``."""
    if not privacy:
        return None
    workers = len(privacy.get("workers") or {})
    if privacy.get("epsilon") is None:
        return f"no guarantee: a DP round without noise ({workers} workers)"
    return (
        f"epsilon {privacy['epsilon']:.3g} at delta {privacy['delta']:g} "
        f"(the most any of {workers} workers spent)"
    )


REPUTATION_ROWS = 10  # workers a model card lists by reputation


class ModelCard(_Widget):
    """Owner, licence, jurisdictions, global CID and round history of one model."""

    def __init__(
        self,
        model_id: str | int | None = None,
        session: Session | None = None,
        model: ModelInfo | None = None,
        history: Sequence[RoundInfo] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(session, **kwargs)
        self.card = w.HTML()
        self.children = [self.card, self.status]
        self.model: dict = {}
        self.history: list[dict] = []
        if model is not None:
            self.set_data(model, history)
        elif model_id is not None:
            self.model_number = int(model_id)
            self.refresh()

    def refresh(self) -> None:
        model = self.call(lambda s: s.model(self.model_number))
        if model is None:
            return
        history = self.call(lambda s: s.round_history(self.model_number))
        setup = self.call(lambda s: s.model_setup(self.model_number))
        reputation = self.call(lambda s: s.reputation(self.model_number))
        self.set_data(model, history, setup, reputation)

    def set_data(
        self,
        model: ModelInfo,
        history: Sequence[RoundInfo] | None = None,
        setup: Mapping[str, Any] | None = None,
        reputation: Sequence[Any] | None = None,
    ) -> None:
        """Render ``model``, its rounds, (``setup``: `Session.model_setup`) the data it takes
        and how it trains, and (``reputation``: `Session.reputation`) its workers' records,
        the best first."""
        from ..cli import round_json

        self.model = self.shown(model)
        self.history = self.shown([round_json(h) for h in history or []])
        m = self.model
        fields = {
            "owner": m["owner"],
            "licence": m["licence"],
            "jurisdictions": ", ".join(model.jurisdictions) or None,
            "status": m.get("status"),
            "global CID": m.get("global_cid"),
            "round": m.get("round"),
            "strategy": _strategy_text(m),
            "rewards when": _improvement_text(m),
            "privacy": _privacy_text(m.get("privacy")),
            "pool": m.get("pool"),
            "validators": m.get("validators"),
            "total stake": m.get("total_stake"),
            "metric": m.get("metric"),
        }
        if setup:
            data, training = setup.get("data") or {}, setup.get("training") or {}
            fields["takes"] = (
                f"{tuple(data.get('input_shape', ()))} {data.get('dtype', '')}, "
                f"labels {data.get('label')}"
            )
            fields["features"] = data.get("features") or None
            lr = training.get("learning_rate")
            fields["trains with"] = (
                f"{training.get('optimizer')}"
                + (f" (learning rate {lr:g})" if isinstance(lr, int | float) else "")
                + (f", loss {training['loss']}" if training.get("loss") else "")
            )
        token = self.token() if self._session is not None else None
        rows = "".join(
            f"<tr><th>{k}</th><td>{value_html(v, token, k == 'total stake')}</td></tr>"
            for k, v in fields.items()
        )
        title = html.escape(f"{model.name} (#{model.id})")
        hist = ""
        metric = m.get("metric") or "accuracy"  # the model's own, by its Keras name
        if self.history:
            keep = ("number", "round_id", "status", "aggregate_cid")
            rows_h = [
                {k: h.get(k) for k in keep if k in h} | dict(h.get("metrics") or {})
                for h in self.history
            ]
            hist = (
                "<h4>History</h4>"
                + table_html(rows_h)
                + svg.line_chart(_metric_points(self.history, metric), metric)
            )
        if reputation:
            best = sorted(self.shown(list(reputation)), key=lambda r: -r["score"])[:REPUTATION_ROWS]
            hist += f"<h4>Workers by reputation</h4>{table_html(best)}"
        self.card.value = (
            f'{_CSS}<div class="dfml-card"><h3>{title}</h3>'
            f'<table class="dfml-t">{rows}</table>{hist}</div>'
        )


# -- round dashboard ------------------------------------------------------------------------


def _addresses(value: Any) -> list[str]:
    """The workers named in a status field (a list of addresses)."""
    return [str(item) for item in value] if isinstance(value, list | tuple) else []


class RoundDashboard(_Widget):
    """A round live: progress per worker, accuracy and loss per round, rewards and slashes.

    `start()` polls `round status ID` every `interval` seconds in a background thread (the kernel
    stays free) until the round is final or `stop()` is called. With ``follow_plan`` (the
    default) it moves on to the next round of a `round start --rounds N` plan when one ends.
    """

    def __init__(
        self,
        round_id: str | int,
        session: Session | None = None,
        interval: float = 2.0,
        start: bool = True,
        follow_plan: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(session, **kwargs)
        self.round_id = int(round_id)
        self.follow_plan = follow_plan
        self.interval = interval
        self.header = w.HTML()
        self.workers = w.HTML()
        self.plots = w.HTML()
        self.payouts = w.HTML()
        self.stop_button = w.Button(description="Stop watching", icon="stop")
        self.stop_button.on_click(lambda _b: self.stop())
        self.children = [
            self.header,
            self.stop_button,
            self.workers,
            self.plots,
            self.payouts,
            self.status,
        ]
        self.round: dict = {}
        # metrics of every round seen: from the model's round history, and from this round's
        # status as it changes
        self.metrics_by_round: dict[float, dict] = {}
        self.polls = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._render({"round_id": self.round_id, "status": "waiting"})
        if start:
            self.start()

    # polling

    def start(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name=f"dfml-round-{self.round_id}")
        self._thread.daemon = True  # never keep the kernel from shutting down
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self.stop_button.disabled = True

    def join(self, timeout: float | None = None) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    @property
    def watching(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                going_on = self.poll_once()
            except Exception as err:  # a thread's traceback would go to the kernel's log, unseen
                self.status.value = _CSS + _error_html(err)
                going_on = False
            if not going_on:
                break
            if self.round.get("status") in FINAL_ROUND_STATES:
                nxt = self.round.get("next_round_id")
                if not (self.follow_plan and nxt is not None):
                    break
                self.round_id = int(nxt)  # the plan's next round: keep the metrics so far
                continue
            self._stop.wait(self.interval)
        self.stop_button.disabled = True

    def poll_once(self) -> bool:
        """Read the round once; False when polling cannot go on (the error is shown)."""
        session = self.session
        try:
            rnd = session.round(self.round_id)
            nxt = session.next_round(rnd) if rnd.status in FINAL_ROUND_STATES else None
            history = None
            if self.polls == 0 or rnd.status in FINAL_ROUND_STATES:
                history = session.round_history(rnd.model_id)
        except UsageError as err:  # no such round: retrying will not help
            self.status.value = _CSS + _error_html(err)
            return False
        except DfmlError as err:  # the chain may come back: show it and keep polling
            self.status.value = _CSS + _error_html(err)
            return True
        self.polls += 1
        self.status.value = ""
        self.update(rnd, history, None if nxt is None else nxt.round_id)
        return True

    # rendering

    def update(
        self,
        rnd: RoundInfo,
        history: Sequence[RoundInfo] | None = None,
        next_round_id: int | None = None,
    ) -> None:
        """Render a round (and the model's round history, for the metrics over rounds)."""
        from ..cli import round_json

        status = self.shown(round_json(rnd))
        status["next_round_id"] = next_round_id
        self._render(status, self.shown([round_json(r) for r in history or []]))

    def _render(self, status: Mapping, history: Sequence[Mapping] = ()) -> None:
        self.round = dict(status)
        for past in history:
            if past.get("metrics"):
                self.metrics_by_round[float(past["round_id"])] = dict(past["metrics"])
        rid = self.round.get("round_id", self.round_id)
        if isinstance(rid, int | float) and self.round.get("metrics"):
            self.metrics_by_round[float(rid)] = dict(self.round["metrics"])
        self._render_header()
        self._render_workers()
        self._render_plots()
        self._render_payouts()

    def _render_header(self) -> None:
        r = self.round
        state = str(r.get("status", "?"))
        color = {"finalized": "#1a7f37", "failed": "#cf222e"}.get(state, "#9a6700")
        metrics = r.get("metrics") or {}
        shown = ", ".join(
            f"{html.escape(str(k))} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
            for k, v in metrics.items()
        )
        self.header.value = (
            f"{_CSS}<b>Round {html.escape(str(r.get('round_id', self.round_id)))}</b>"
            + (f" of model {html.escape(str(r['model_id']))}" if r.get("model_id") else "")
            + f' — <b style="color:{color}">{html.escape(state)}</b>'
            + (f" · {shown}" if shown else "")
            + (f" · {html.escape(str(r['note']))}" if r.get("note") else "")
            + (f" · {int(r['rounds_left'])} more in its plan" if r.get("rounds_left") else "")
            + (
                f' · aggregate <span class="dfml-mono">{html.escape(str(r["aggregate_cid"]))}'
                "</span>"
                if r.get("aggregate_cid")
                else ""
            )
        )

    def worker_progress(self) -> dict[str, float]:
        """Each selected worker's progress: its reported fraction, else 1 once it submitted."""
        selected = _addresses(self.round.get("selected"))
        submitted = set(_addresses(self.round.get("submitted")))
        reported = self.round.get("progress")
        reported = reported if isinstance(reported, Mapping) else {}
        out = {}
        for who in [*selected, *(s for s in submitted if s not in selected)]:
            if who in submitted:
                out[who] = 1.0
            else:
                value = reported.get(who, 0.0)
                out[who] = float(value) if isinstance(value, int | float) else 0.0
        return out

    def _render_workers(self) -> None:
        progress = self.worker_progress()
        if not progress:
            self.workers.value = "<em>no workers selected yet</em>"
            return
        submitted = set(_addresses(self.round.get("submitted")))
        rows = []
        for who, frac in progress.items():
            pct = max(0.0, min(1.0, frac)) * 100
            state = "submitted" if who in submitted else ("training" if frac > 0 else "waiting")
            rows.append(
                f'<tr><td class="dfml-mono" title="{html.escape(who)}">'
                f"{html.escape(svg.short_address(who))}</td>"
                f'<td><div style="width:160px;background:#eee;height:10px">'
                f'<div style="width:{pct:.0f}%;background:#1f77b4;height:10px"></div></div></td>'
                f"<td>{pct:.0f}%</td><td>{state}</td></tr>"
            )
        done = sum(1 for v in progress.values() if v >= 1.0)
        self.workers.value = (
            f"{_CSS}<b>Workers</b> ({done}/{len(progress)} submitted)"
            f'<table class="dfml-t">{"".join(rows)}</table>'
        )

    def _render_plots(self) -> None:
        """One line over rounds per metric the validators report, by its Keras name: the
        model's own metric (accuracy, mae, ...) first, then the loss; never the raw ppm fields
        or the base model's metric (the improvement rule's)."""
        names = plotted_metrics(self.metrics_by_round.values())
        colors = ["#1f77b4", "#2ca02c", "#9467bd"]
        charts = [
            svg.line_chart(
                _metric_points(self._rounds_seen(), k),
                k,
                color="#d62728" if k == "loss" else colors[i % 3],
            )
            for i, k in enumerate(names or ["accuracy", "loss"])
        ]
        self.plots.value = (
            '<div class="dfml-plots" style="display:flex;gap:12px">' + "".join(charts) + "</div>"
        )

    def _rounds_seen(self) -> list[dict]:
        return [{"round_id": x, "metrics": m} for x, m in sorted(self.metrics_by_round.items())]

    def _render_payouts(self) -> None:
        rewards = self.round.get("rewards") or {}
        slashes = self.round.get("slashes") or {}
        self.payouts.value = (
            '<div style="display:flex;gap:12px">'
            + svg.bar_chart(dict(rewards), "rewards", color="#2ca02c")
            + svg.bar_chart(dict(slashes), "slashes", color="#d62728")
            + "</div>"
        )


# -- a participant of this kernel -----------------------------------------------------------


class ParticipantWidget(w.VBox):
    """A worker or validator running in this kernel (`%dfml worker join`): its live status
    (rounds, updates, rewards, slashes), refreshed every ``interval`` seconds while it runs,
    and a Leave button (stop, and unstake)."""

    def __init__(self, participant: Any, interval: float = 2.0, **kwargs: Any) -> None:
        self.participant = participant
        self.interval = interval
        self.status_html = w.HTML()
        self.leave_button = w.Button(description="Leave", icon="sign-out")
        self.leave_button.on_click(lambda _b: self.leave())
        super().__init__([self.status_html, self.leave_button], **kwargs)
        self._stop = threading.Event()
        self.refresh()
        self._thread = threading.Thread(target=self._loop, name="dfml-participant", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.refresh()
            if not self.participant.running:
                break

    def refresh(self) -> None:
        try:
            st = self.participant.status()
        except DfmlError as err:
            self.status_html.value = _CSS + _error_html(err)
            return
        state = "running" if st.running else "stopped"
        color = "#1a7f37" if st.running else "#9a6700"
        rows = {
            "account": st.address,
            "stake": st.stake,
            ("rounds selected" if st.role == "worker" else "rounds attested"): st.selected,
            "updates sent": st.submitted if st.role == "worker" else None,
            "last round": st.last_round,
            "rewards": st.rewards,
            "slashes": st.slashes,
        }
        body = "".join(
            f"<tr><th>{html.escape(k)}</th><td>{value_html(v)}</td></tr>"
            for k, v in rows.items()
            if v is not None or k == "last round"
        )
        error = f'<br><span class="dfml-bad">{html.escape(st.error)}</span>' if st.error else ""
        self.status_html.value = (
            f"{_CSS}<b>{html.escape(st.role)} of model {st.model_id}</b> — "
            f'<b style="color:{color}">{state}</b>{error}<table class="dfml-t">{body}</table>'
        )
        self.leave_button.disabled = not st.running

    def leave(self) -> None:
        self.leave_button.disabled = True
        self.participant.leave()
        self._stop.set()
        self.refresh()


__all__ = ["AccountsWidget", "ModelCard", "ParticipantWidget", "ProposalsWidget", "RoundDashboard"]
