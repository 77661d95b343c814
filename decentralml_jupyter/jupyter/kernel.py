"""The kernel's `Session`: the one the loaded `%dfml` magic holds (built from its `%config`),
else one from the environment, so widgets made without a session act as `%dfml` does."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..session import Session

_fallback: Session | None = None
_fallback_lock = threading.Lock()


def current_session() -> Session:
    """The loaded `%dfml` magic's Session (its `%config`), else one from DFML_URL,
    DFML_STORAGE and DFML_KEY, made once per process."""
    global _fallback
    try:
        from IPython import get_ipython
    except ImportError:  # widgets used without IPython
        shell = None
    else:
        shell = get_ipython()
    magics = getattr(shell, "magics_manager", None)
    instance = magics.registry.get("DFMLMagics") if magics is not None else None
    if instance is not None:
        return instance.session
    with _fallback_lock:
        if _fallback is None:
            from ..session import Session

            _fallback = Session()
        return _fallback
