"""Fixtures for the notebook front end: one IPython shell with `%load_ext decentralml_jupyter`."""

from __future__ import annotations

import pytest
from IPython.core.interactiveshell import InteractiveShell


@pytest.fixture(scope="session")
def ip():
    """An in-process IPython shell (what a kernel runs) with the extension loaded."""
    shell = InteractiveShell.instance()
    shell.run_line_magic("load_ext", "decentralml_jupyter")
    try:
        yield shell
    finally:
        shell.run_line_magic("unload_ext", "decentralml_jupyter")
        InteractiveShell.clear_instance()


@pytest.fixture()
def chain_ip(ip, devchain_url):
    """The shell pointed at the session's dev chain the way a user would: with %config."""
    ip.run_line_magic("config", f'DFMLMagics.url = "{devchain_url}"')
    ip.run_line_magic("config", 'DFMLMagics.key = "//Alice"')
    return ip
