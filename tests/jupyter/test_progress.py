"""The progress helper: a bar and the latest message in a kernel, lines elsewhere."""

from __future__ import annotations

import io

import pytest

from decentralml_jupyter import cli
from decentralml_jupyter.errors import ChainNotReachable
from decentralml_jupyter.jupyter import Progress, Runner


def test_progress_prints_outside_a_kernel():
    out = io.StringIO()
    p = Progress(title="chain up", stream=out)
    assert not p.use_widget  # a plain IPython shell or script has no front end for widgets
    p("installing Chopsticks")
    p.done()
    assert out.getvalue() == "[chain up] installing Chopsticks\n" and p.box is None


def test_progress_widget_shows_messages_and_fractions():
    p = Progress(title="upload", widget=True)
    assert p.box is None  # nothing shown until there is something to say
    p("installing <npm> packages")
    assert "installing &lt;npm&gt; packages" in p.label.value
    first = p.bar.value
    p("extracting genesis")
    assert 0 < first < p.bar.value < 1  # no fraction: it creeps, never reaching the end
    p("uploading", fraction=0.5)
    assert p.bar.value == 0.5
    with p:
        pass
    assert p.bar.value == 1.0 and p.bar.bar_style == "success"
    p.done(ok=False, message="failed")
    assert p.bar.bar_style == "danger" and p.label.value == "failed"


def test_runner_routes_cli_progress_and_restores_it(monkeypatch):
    def connect(args):
        # what a long verb does: report through the CLI's progress function, then (here) fail
        cli._progress(f"connecting to {args.url}")
        raise ChainNotReachable(f"dev chain not reachable at {args.url}")

    monkeypatch.setattr(cli, "_chain", connect)
    seen: list[str] = []
    original = cli._progress
    with pytest.raises(ChainNotReachable):
        Runner(url="ws://127.0.0.1:1")(["account", "balance", "Alice"], progress=seen.append)
    assert seen == ["connecting to ws://127.0.0.1:1"]
    assert cli._progress is original


def test_a_storage_upload_feeds_the_notebook_progress_bar(ip, storage_url, tmp_path):
    from decentralml_jupyter import cli
    from decentralml_jupyter.jupyter import Progress
    from decentralml_jupyter.jupyter.runner import Runner

    src = tmp_path / "big.bin"
    src.write_bytes(b"\x01" * (3 * 2**20))
    seen = []

    class Recording(Progress):
        def __call__(self, message, fraction=None):
            seen.append((message, fraction))

    runner = Runner(storage=storage_url)
    out = runner(["storage", "put", str(src)], progress=Recording("upload"))
    assert out["size"] == 3 * 2**20
    assert seen and seen[-1][1] == 1.0 and "big.bin" in seen[-1][0]
    assert [f for _, f in seen] == sorted(f for _, f in seen)  # it only moves forward
    assert cli._progress is not None and not isinstance(cli._progress, Recording)  # restored
