"""The DecentralML "pallet": a deterministic state machine folded over protocol remarks.

``State`` (in ``machine``) combines one mixin per domain: ``models``, ``stakes``, ``tasks``,
``governance``, ``rounds`` and ``payouts`` (the books) hold the call handlers, ``queries`` the
read side, ``snapshot`` the codec; ``core`` holds the tables and ``records`` their rows.
"""

from __future__ import annotations

from .governance import PARAM_BOUNDS
from .machine import State
from .records import MIN_POOL_SIGNATORIES
from .snapshot import FORMAT

__all__ = ["FORMAT", "MIN_POOL_SIGNATORIES", "PARAM_BOUNDS", "State"]
