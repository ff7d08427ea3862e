"""Progress reporting for long fits: tqdm's bar where a person watches, plain lines in logs.

:func:`progress_bar` gives ``tqdm.auto`` (a widget in notebooks, a bar in terminals) when the output is
interactive, and :class:`LineProgress` otherwise: one plain line every ``every`` percent, so a fit whose output
goes to a file (``make demo > log``, a batch job) writes about 20 lines instead of thousands of carriage
returns. Both have the small part of tqdm's interface the fit uses: ``update``, ``set_postfix``, ``close`` and a
writable ``total``.
"""
from __future__ import annotations

import sys
import time
from typing import IO, Any

__all__ = ["progress_bar", "LineProgress", "is_interactive"]


def is_interactive(stream: IO | None = None) -> bool:
    """True in a Jupyter/IPython kernel or when ``stream`` (default ``sys.stderr``) is a terminal."""
    try:
        from IPython import get_ipython  # noqa: PLC0415

        shell = get_ipython()
        if shell is not None and type(shell).__name__ == "ZMQInteractiveShell":
            return True
    except ImportError:
        pass
    stream = sys.stderr if stream is None else stream
    return bool(getattr(stream, "isatty", lambda: False)())


class LineProgress:
    """Plain-text progress: a line ``desc: k/total (p %) [elapsed s] postfix`` each time another ``every`` percent
    of ``total`` is done, and one at :meth:`close`."""

    def __init__(self, total: int, desc: str = "", every: float = 5.0, file: IO | None = None):
        self.total, self.desc, self.every = int(total), desc, float(every)
        self.file = sys.stderr if file is None else file
        self.n, self._next, self._postfix, self._t0 = 0, self.every, "", time.perf_counter()
        self._closed = False

    def _line(self) -> str:
        pct = 100.0 * self.n / max(self.total, 1)
        tail = f" {self._postfix}" if self._postfix else ""
        return f"{self.desc}: {self.n}/{self.total} ({pct:.0f} %) [{time.perf_counter() - self._t0:.0f} s]{tail}"

    def update(self, k: int = 1) -> None:
        self.n += int(k)
        pct = 100.0 * self.n / max(self.total, 1)
        if pct >= self._next:
            print(self._line(), file=self.file, flush=True)
            while self._next <= pct:
                self._next += self.every

    def set_postfix(self, **kw: Any) -> None:
        self._postfix = " ".join(f"{k}={v}" for k, v in kw.items())

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            print(self._line() + " done", file=self.file, flush=True)


def progress_bar(total: int, desc: str):
    """tqdm's auto bar when the output is interactive (:func:`is_interactive`), else :class:`LineProgress`."""
    if is_interactive():
        from tqdm.auto import tqdm

        return tqdm(total=total, desc=desc, leave=False)
    return LineProgress(total, desc)
