"""The progress helper: a bar and the latest message in a kernel, lines elsewhere."""

from __future__ import annotations

import io

from decentralml_jupyter import cli
from decentralml_jupyter.jupyter import Progress


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


def test_a_storage_upload_feeds_the_notebook_progress_bar(storage_url, tmp_path):
    from decentralml_jupyter import Session
    from decentralml_jupyter.jupyter import Progress

    src = tmp_path / "big.bin"
    src.write_bytes(b"\x01" * (3 * 2**20))
    seen = []

    class Recording(Progress):
        def __call__(self, message, fraction=None):
            seen.append((message, fraction))

    with Session(storage=storage_url) as session:
        stored = session.put_file(src, progress=Recording("upload"))
    assert stored.size == 3 * 2**20
    assert seen and seen[-1][1] == 1.0 and "big.bin" in seen[-1][0]
    assert [f for _, f in seen] == sorted(f for _, f in seen)  # it only moves forward
    # the CLI's verb with the same callback: the same reports, and its JSON
    seen.clear()
    out = cli.run(["--storage", storage_url, "storage", "put", str(src)], progress=Recording("u"))
    assert out["size"] == 3 * 2**20 and seen[-1][1] == 1.0
