"""Result types: plain data in code (equality, indexing, iteration), tables in a notebook."""

from __future__ import annotations

from decentralml_jupyter.jupyter.results import Record, Records, plain, wrap

RECEIPT = {
    "block_hash": "0x" + "ab" * 32,
    "block_number": 42,
    "extrinsic_index": 2,
    "success": True,
    "error": None,
}


def test_record_behaves_like_the_dict():
    data = {"model_id": 3, "pool": "5Exx", "receipt": RECEIPT}
    r = wrap(data)
    assert isinstance(r, Record) and r == data and data == r
    assert r["model_id"] == 3 and list(r) == list(data) and r.get("nope") is None
    assert r.to_plain() == data and type(r.to_plain()) is dict


def test_records_behave_like_the_list():
    rows = [{"id": 1, "status": "open"}, {"id": 2, "status": "passed", "ayes": 7}]
    r = wrap(rows)
    assert isinstance(r, Records) and r == rows and r[1]["ayes"] == 7
    assert [x["id"] for x in r] == [1, 2] and len(r) == 2
    html = r._repr_html_()
    # one column per field seen in any row, in order of appearance
    assert html.index("<th>id</th>") < html.index("<th>status</th>") < html.index("<th>ayes</th>")
    assert html.count("<tr>") == 3


def test_scalars_pass_through():
    assert wrap(None) is None and wrap("x") == "x" and wrap(5) == 5


def test_receipts_render_compactly_and_failures_say_why():
    ok = wrap({"receipt": RECEIPT})._repr_html_()
    assert "✓ included" in ok and "#42" in ok and "extrinsic 2" in ok
    assert "0xabababab…" in ok and RECEIPT["block_hash"] in ok  # full hash kept as a tooltip
    failed = wrap({"receipt": {**RECEIPT, "success": False, "error": "Balances.Insufficient"}})
    assert "✗ failed: Balances.Insufficient" in failed._repr_html_()


def test_nested_values_and_escaping():
    r = wrap(
        {
            "name": "<script>alert(1)</script>",
            "workers": [{"name": "w1", "address": "5A"}, {"name": "w2", "address": "5B"}],
            "chain": {"url": "ws://x", "running": True},
            "tags": ["EU", "CH"],
            "cid": None,
        }
    )
    html = r._repr_html_()
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert "<th>address</th>" in html and "w2" in html  # list of records -> nested table
    assert "<th>url</th>" in html and "EU, CH" in html and "—" in html


def test_plain_unwraps_everything():
    nested = wrap([wrap({"a": wrap([1, 2])})])
    out = plain(nested)
    assert out == [{"a": [1, 2]}]
    assert type(out) is list and type(out[0]) is dict and type(out[0]["a"]) is list
