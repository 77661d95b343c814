"""The one way notebooks run a verb: the CLI's `run` with the session's endpoints and key.

Magics and widgets share a `Runner`, so a vote button does exactly what `%dfml vote` does. The
key is passed to the CLI and never shown (`repr` masks it).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .. import config

PROG = "%dfml"
# cli.run reports long work through the module-level `_progress`; swapping it is process-wide,
# so runs that report progress take turns.
_progress_lock = threading.Lock()


@dataclass
class Runner:
    """Runs CLI verbs against one chain/storage endpoint, signing with one key."""

    url: str = field(default_factory=config.default_url)
    storage: str = field(default_factory=config.default_storage)
    key: str = field(default_factory=config.default_key, repr=False)

    def argv(self, args: Sequence[str]) -> list[str]:
        # globals first: options repeated later on the line override them (argparse keeps the last)
        return ["--url", self.url, "--storage", self.storage, "--key", self.key, *args]

    def __call__(self, args: Sequence[str], progress: Callable[[str], None] | None = None) -> Any:
        """Run ``args`` (``["account", "list"]``) and return the verb's plain data."""
        from .. import cli

        argv = self.argv(args)
        if progress is None or not hasattr(cli, "_progress"):
            return cli.run(argv, prog=PROG)
        with _progress_lock:
            saved = cli._progress
            cli._progress = progress
            try:
                return cli.run(argv, prog=PROG)
            finally:
                cli._progress = saved

    def parser(self):
        from .. import cli

        return cli.build_parser(PROG)


class MagicRunner:
    """A runner that follows the loaded magic's `%config` at each call, for widgets made with
    no runner: `%config DFMLMagics.key = "//Bob"` then makes a vote button vote as Bob."""

    def __call__(self, args: Sequence[str], progress: Callable[[str], None] | None = None) -> Any:
        return current_runner()(args, progress=progress)

    def parser(self):
        return current_runner().parser()

    def __getattr__(self, name: str) -> Any:
        if name == "key":  # the key stays with the magic
            raise AttributeError(name)
        return getattr(current_runner(), name)

    def __repr__(self) -> str:
        return f"MagicRunner(url={current_runner().url!r})"


def current_runner() -> Runner:
    """The loaded `%dfml` magic's runner (its `%config`), else one from the environment."""
    try:
        from IPython import get_ipython
    except ImportError:  # widgets used without IPython
        return Runner()
    shell = get_ipython()
    magics = getattr(shell, "magics_manager", None)
    instance = magics.registry.get("DFMLMagics") if magics is not None else None
    return instance.runner() if instance is not None else Runner()
