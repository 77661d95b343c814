"""Jupyter front end: the `%dfml` magics, result types and widgets.

Everything here loads lazily: `%load_ext decentralml_jupyter` imports the magics only, and
ipywidgets is imported when a widget is first made.
"""

from __future__ import annotations

from typing import Any

_LAZY = {
    "DFMLMagics": ".magics",
    "Record": ".results",
    "Records": ".results",
    "current_session": ".kernel",
    "Session": "..session",
    "Progress": ".progress",
    "AccountsWidget": ".widgets",
    "ProposalsWidget": ".widgets",
    "ModelCard": ".widgets",
    "RoundDashboard": ".widgets",
    "ParticipantWidget": ".widgets",
}

__all__ = [*_LAZY, "load_ipython_extension", "unload_ipython_extension"]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from importlib import import_module

    return getattr(import_module(module, __name__), name)


def load_ipython_extension(ipython) -> None:
    """`%load_ext decentralml_jupyter`: register `%dfml` / `%%dfml`."""
    from .magics import DFMLMagics

    ipython.register_magics(DFMLMagics)


def unload_ipython_extension(ipython) -> None:
    """`%unload_ext decentralml_jupyter`: remove `%dfml` / `%%dfml`."""
    manager = ipython.magics_manager
    instance = manager.registry.pop("DFMLMagics", None)
    for kind in ("line", "cell"):
        manager.magics[kind].pop("dfml", None)
    if instance is not None and instance in ipython.configurables:
        ipython.configurables.remove(instance)
