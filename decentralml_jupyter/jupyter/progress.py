"""Progress of long work (first installs, training, uploads) in a notebook or a terminal.

`Progress` is the `progress(message)` callable the lower layers accept (`devchain.up`), optionally
with a fraction; in a kernel it shows a bar and the latest message, elsewhere it prints them.
"""

from __future__ import annotations

import sys
import time
from typing import Any


def in_kernel() -> bool:
    """Whether widgets can be shown: a Jupyter kernel, not a terminal IPython or plain Python."""
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and getattr(shell, "kernel", None) is not None


class Progress:
    """Call with a message (and optionally a fraction 0..1) as work advances; `done()` at the end.

    The widget is created on the first message, so verbs that report nothing show nothing.
    """

    def __init__(self, title: str = "", widget: bool | None = None, stream: Any = None) -> None:
        self.title = title
        self.use_widget = in_kernel() if widget is None else widget
        self.stream = stream if stream is not None else sys.stderr
        self.messages: list[str] = []
        self.started = time.monotonic()
        self.bar: Any = None
        self.label: Any = None
        self.box: Any = None

    def _show(self) -> None:
        import ipywidgets as w

        # indeterminate until a fraction arrives: most steps (npm install) cannot say how far along
        self.bar = w.FloatProgress(value=0.0, min=0.0, max=1.0, bar_style="info")
        self.label = w.HTML()
        self.box = w.HBox([self.bar, self.label])
        if self.title:
            self.bar.description = self.title
        try:
            from IPython.display import display

            display(self.box)
        except ImportError:
            pass

    def __call__(self, message: str, fraction: float | None = None) -> None:
        self.messages.append(message)
        if not self.use_widget:
            prefix = f"[{self.title}] " if self.title else "[dfml] "
            print(prefix + message, file=self.stream, flush=True)
            return
        import html

        if self.box is None:
            self._show()
        elapsed = time.monotonic() - self.started
        self.label.value = f"{html.escape(message)} <small>({elapsed:.0f} s)</small>"
        if fraction is not None:
            self.bar.value = max(0.0, min(1.0, float(fraction)))
        else:
            # no measure of the whole: move a little so the bar shows that work goes on
            self.bar.value = min(0.95, self.bar.value + (1.0 - self.bar.value) * 0.15)

    def done(self, ok: bool = True, message: str | None = None) -> None:
        if self.box is None:
            return
        self.bar.value = 1.0
        self.bar.bar_style = "success" if ok else "danger"
        if message is not None:
            import html

            self.label.value = html.escape(message)

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.done(ok=exc_type is None)
