"""``TaskHandlers``: tasks with a funded budget, workers' assignments and submissions, the
creator's (or, with ``auto`` validation, the validators') decisions, and closing a task at
the end of its review window (undecided submissions expire, the unspent budget is refunded).
"""

from __future__ import annotations

from typing import Any

from .. import calls as C
from ..values import CallContext
from .models import ModelHandlers
from .records import _require, _Submission, _Task

_ACTIVE_ASSIGNMENT = ("assigned", "submitted", "accepted")


class TaskHandlers(ModelHandlers):
    """Task calls and task expiry."""

    def _create_task(self, ctx: CallContext, c: C.CreateTask) -> tuple[str, int]:
        m = self._live_model(c.model_id)
        _require(c.reward > 0, "task reward must be positive")
        _require(c.max_assignments > 0, "max_assignments must be positive")
        _require(c.duration_blocks > 0, "duration_blocks must be positive")
        budget = c.reward * c.max_assignments
        _require(budget < 1 << 128, "task budget overflows u128")
        self._custodial(m)
        key = self._find_transfer(ctx, ctx.signer, m.pool, budget, m.stake_asset)
        self._consumed.add(key)
        tid = self._take_id("task")
        expires = ctx.block_number + c.duration_blocks
        self._tasks[tid] = _Task(
            id=tid,
            model_id=m.id,
            creator=ctx.signer,
            role=c.role,
            reward=c.reward,
            max_assignments=c.max_assignments,
            validation=c.validation,
            description=c.description,
            asset=m.stake_asset,
            expires_at=expires,
            review_until=expires + self._params["task_review_blocks"],
            escrow=budget,
            status="open",
            assignments=[],
            created_block=ctx.block_number,
            created_extrinsic=ctx.extrinsic_index,
        )
        self._credit(m.id, m.pool, budget)
        return ("task", tid)

    def _open_task(self, ctx: CallContext, task_id: int) -> _Task:
        t = self._tasks.get(task_id)
        _require(t is not None, f"unknown task {task_id}")
        assert t is not None
        _require(t.status == "open", f"task {t.id} is closed")
        _require(ctx.block_number < t.expires_at, f"task {t.id} expired at block {t.expires_at}")
        return t

    def _assign_task(self, ctx: CallContext, c: C.AssignTask) -> None:
        t = self._open_task(ctx, c.task_id)
        _require(ctx.signer != t.creator, "a task's creator cannot take it")
        problem = self._eligible(self._models[t.model_id], ctx.signer)
        _require(problem is None, str(problem))
        active = [a for a in t.assignments if a["status"] in _ACTIVE_ASSIGNMENT]
        _require(
            all(a["account"] != ctx.signer for a in active),
            f"{ctx.signer} already holds an assignment on task {t.id}",
        )
        _require(len(active) < t.max_assignments, f"task {t.id} has no free assignment")
        t.assignments.append({"account": ctx.signer, "status": "assigned", "submission_id": None})

    def _submit_result(self, ctx: CallContext, c: C.SubmitResult) -> tuple[str, int]:
        t = self._open_task(ctx, c.task_id)
        mine = [a for a in t.assignments if a["account"] == ctx.signer]
        _require(
            bool(mine) and mine[-1]["status"] == "assigned",
            f"{ctx.signer} has no open assignment on task {t.id}",
        )
        sid = self._take_id("submission")
        self._submissions[sid] = _Submission(
            sid,
            t.id,
            ctx.signer,
            c.result_cid,
            "pending",
            "",
            ctx.block_number,
            ctx.extrinsic_index,
        )
        mine[-1]["status"] = "submitted"
        mine[-1]["submission_id"] = sid
        return ("submission", sid)

    def _decidable(
        self, ctx: CallContext, submission_id: int
    ) -> tuple[_Submission, _Task, dict[str, Any]]:
        s = self._submissions.get(submission_id)
        _require(s is not None, f"unknown submission {submission_id}")
        assert s is not None
        _require(s.status == "pending", f"submission {s.id} is already {s.status}")
        t = self._tasks[s.task_id]
        _require(
            t.status == "open" and ctx.block_number < t.review_until,
            f"review of task {t.id} closed at block {t.review_until}",
        )
        m = self._models[t.model_id]
        allowed = ctx.signer == t.creator or (t.validation == "auto" and ctx.signer in m.validators)
        who = "its creator" + (" or the model's validators" if t.validation == "auto" else "")
        _require(allowed, f"only {who} can decide on submissions to task {t.id}")
        slot = next(a for a in t.assignments if a["submission_id"] == s.id)
        return s, t, slot

    def _accept_submission(self, ctx: CallContext, c: C.AcceptSubmission) -> None:
        s, t, slot = self._decidable(ctx, c.submission_id)
        s.status = "accepted"
        slot["status"] = "accepted"
        t.escrow -= t.reward
        self._new_payout(t.model_id, s.worker, t.reward, "task_reward", ctx.block_number)

    def _reject_submission(self, ctx: CallContext, c: C.RejectSubmission) -> None:
        s, _t, slot = self._decidable(ctx, c.submission_id)
        s.status = "rejected"
        s.reason = c.reason
        slot["status"] = "rejected"  # frees the slot for another worker

    def _close_reviewed_tasks(self, block: int) -> None:
        """Close every open task whose review window ended by ``block`` (in id order)."""
        for t in sorted(self._tasks.values(), key=lambda t: t.id):
            if t.status == "open" and t.review_until <= block:
                self._close_task(t, block)

    def _close_task(self, t: _Task, block: int) -> None:
        for slot in t.assignments:
            if slot["status"] in ("assigned", "submitted"):
                if slot["submission_id"] is not None:
                    self._submissions[slot["submission_id"]].status = "expired"
                slot["status"] = "expired"
        t.status = "closed"
        refund, t.escrow = t.escrow, 0
        self._new_payout(t.model_id, t.creator, refund, "task_refund", block)
