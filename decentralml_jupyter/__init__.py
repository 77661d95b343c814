"""decentralml-jupyter: DecentralML (federated learning governed on a Substrate chain) from Jupyter.

Heavy dependencies (substrate-interface, TensorFlow) are imported lazily by the submodules that
need them, so importing the package stays cheap.
"""

__version__ = "0.1.0"


def __getattr__(name: str):
    """`from decentralml_jupyter import Session` without importing it with the package (the
    magic's `%load_ext` stays cheap)."""
    if name == "Session":
        from .session import Session

        return Session
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def load_ipython_extension(ipython) -> None:
    """`%load_ext decentralml_jupyter` (the magics live in `decentralml_jupyter.jupyter`)."""
    from .jupyter import load_ipython_extension as load

    load(ipython)


def unload_ipython_extension(ipython) -> None:
    from .jupyter import unload_ipython_extension as unload

    unload(ipython)


def _jupyter_server_extension_points() -> list[dict[str, str]]:
    """The Jupyter server extension (REST for the side panel) lives in `jupyter.server`."""
    return [{"module": "decentralml_jupyter.jupyter.server"}]


def _jupyter_labextension_paths() -> list[dict[str, str]]:
    """The prebuilt JupyterLab side panel, for `jupyter labextension develop`."""
    return [{"src": "labextension", "dest": "decentralml-jupyter"}]
