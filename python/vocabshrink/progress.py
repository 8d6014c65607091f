"""Progress bars for every stage: tqdm on a terminal, a line every 30 seconds in a log file, nothing when off.

A redirected tqdm writes a carriage-return update many times a second, which turns a log into thousands of
fragments; `progress_bar` gives such a stream at most one line per `LOG_INTERVAL_S` and a summary at the end.
tqdm is imported only when a bar is shown on a terminal (it takes about 50 ms to import).

Imports: nothing of vocabshrink.
"""

from __future__ import annotations

import sys
import time
from typing import Any

LOG_INTERVAL_S = 30.0


class NoBar:
    """What a disabled bar does: nothing."""

    n = 0

    def __enter__(self) -> "NoBar":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def update(self, n: int = 1) -> None:
        return None

    def set_postfix(self, ordered_dict: dict | None = None, refresh: bool = True, **kwargs: Any) -> None:
        return None

    def set_postfix_str(self, s: str = "", refresh: bool = True) -> None:
        return None

    def close(self) -> None:
        return None


class LineBar(NoBar):
    """A bar for a stream that is not a terminal: one plain line at most every `interval` seconds, and at close."""

    def __init__(self, desc: str = "", total: int | None = None, unit: str = "it", initial: int = 0,
                 interval: float = LOG_INTERVAL_S, stream: Any = None, **_: Any) -> None:
        self.desc, self.total, self.unit = desc, total, unit.strip() or "it"
        self.n = self._initial = initial
        self.interval = interval
        self.stream = stream if stream is not None else sys.stderr
        self._start = self._last = time.monotonic()
        self._postfix = ""
        self._closed = False

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.monotonic()
        if now - self._last >= self.interval:
            self._last = now
            self._line(now, final=False)

    def set_postfix(self, ordered_dict: dict | None = None, refresh: bool = True, **kwargs: Any) -> None:
        self._postfix = ", ".join(f"{k}={v}" for k, v in {**(ordered_dict or {}), **kwargs}.items())

    def set_postfix_str(self, s: str = "", refresh: bool = True) -> None:
        self._postfix = s

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._line(time.monotonic(), final=True)

    def _line(self, now: float, final: bool) -> None:
        elapsed = max(now - self._start, 1e-9)
        done = f"{self.n:,}" + (f"/{self.total:,}" if self.total else "")
        rate = (self.n - self._initial) / elapsed
        extra = f", {self._postfix}" if self._postfix else ""
        state = "done" if final else "running"
        print(f"{self.desc}: {done} {self.unit} in {elapsed:.0f} s ({rate:,.1f} {self.unit}/s{extra}) [{state}]",
              file=self.stream, flush=True)


def progress_bar(enabled: bool, **kwargs: Any) -> Any:
    """A progress bar: tqdm's on a terminal, a `LineBar` when stderr is redirected, a `NoBar` when not enabled."""
    if not enabled:
        return NoBar()
    if not sys.stderr.isatty():
        return LineBar(**kwargs)
    from tqdm import tqdm

    return tqdm(**kwargs)
