"""Every verb the CLI has today, through `%dfml` in an IPython shell, against the real dev chain."""

from __future__ import annotations

import pytest

from decentralml_jupyter.jupyter.results import Record, Records

pytestmark = pytest.mark.chain
UNIT = 10**12


def test_chain_status(chain_ip, devchain_url):
    status = chain_ip.run_line_magic("dfml", "chain status")
    assert isinstance(status, Record)
    assert status["url"] == devchain_url and status["running"] is True
    assert status["block"] >= 0 and status["spec_name"]
    html = status._repr_html_()
    for field in ("url", "running", "block", "spec_name", "spec_version"):
        assert f"<th>{field}</th>" in html
    assert devchain_url in html


def test_account_list_is_a_table_of_records(chain_ip):
    accounts = chain_ip.run_line_magic("dfml", "account list")
    assert isinstance(accounts, Records)
    names = [a["name"] for a in accounts]
    assert names[:6] == ["Alice", "Bob", "Charlie", "Dave", "Eve", "Ferdie"]
    assert "Dev4" in names
    assert all(a["free"] > 0 for a in accounts)
    html = accounts._repr_html_()
    for column in ("name", "address", "free", "reserved"):
        assert f"<th>{column}</th>" in html
    assert accounts[0]["address"] in html and "Ferdie" in html
    # still the plain data in code
    assert accounts == accounts.to_plain() and isinstance(accounts.to_plain()[0], dict)


def test_transfer_and_balance_and_out(chain_ip):
    before = chain_ip.run_line_magic("dfml", "account balance Dev3")
    assert set(before) == {"address", "free", "reserved"}
    sent = chain_ip.run_line_magic("dfml", f"-o sent account transfer Dev3 {2 * UNIT + 1}")
    assert chain_ip.user_ns["sent"] is sent
    receipt = sent["receipt"]
    assert receipt["success"] is True and receipt["block_number"] >= 1
    # a receipt renders compactly, on one line, with its block
    html = sent._repr_html_()
    assert "✓ included" in html and f"#{receipt['block_number']}" in html
    chain_ip.run_line_magic("dfml", "account balance Dev3 --out after")
    after = chain_ip.user_ns["after"]
    assert after["free"] == before["free"] + 2 * UNIT + 1
    assert after == {**before, "free": before["free"] + 2 * UNIT + 1}


def test_transfer_signed_with_the_configured_key(chain_ip):
    bob = chain_ip.run_line_magic("dfml", "account balance Bob")["free"]
    chain_ip.run_line_magic("config", 'DFMLMagics.key = "//Bob"')
    try:
        r = chain_ip.run_line_magic("dfml", f"account transfer Dev4 {UNIT}")
    finally:
        chain_ip.run_line_magic("config", 'DFMLMagics.key = "//Alice"')
    after = chain_ip.run_line_magic("dfml", "account balance Bob")["free"]
    assert after == bob - UNIT - r["fee"]


def test_remark_line_and_cell(chain_ip):
    r = chain_ip.run_line_magic("dfml", "remark 'hello from a notebook'")
    assert r["receipt"]["success"] is True
    # %%dfml: the cell's YAML mapping becomes --hex 0x...
    r2 = chain_ip.run_cell_magic("dfml", "-o cell_result remark", "hex: '0xdf4d4c01'\n")
    assert r2["receipt"]["success"] is True
    assert chain_ip.user_ns["cell_result"] == r2
    assert r2["receipt"]["block_number"] > r["receipt"]["block_number"]


def test_run_cell_output_shows_the_table(chain_ip, capsys):
    result = chain_ip.run_cell("%dfml chain status")
    assert result.success and isinstance(result.result, Record)
    # the display formatter produces the HTML bundle a notebook shows
    data, _ = chain_ip.display_formatter.format(result.result)
    assert "text/html" in data and "spec_version" in data["text/html"]
    assert "application/json" not in data  # JupyterLab would prefer JSON over the table
    chain_ip.run_line_magic("config", "DFMLMagics.json_display = True")
    try:
        data, _ = chain_ip.display_formatter.format(result.result)
        assert data["application/json"] == dict(result.result)
    finally:
        chain_ip.run_line_magic("config", "DFMLMagics.json_display = False")
