"""Progress bars for long work: tqdm when installed, a plain stderr counter otherwise."""
from __future__ import annotations

import contextlib
import sys
import time
from typing import Iterator, Optional


class _Plain:
    def __init__(self, total: Optional[int], desc: str, unit: str):
        self.total, self.desc, self.unit, self.n = total, desc, unit, 0
        self._last = 0.0

    def update(self, k: int) -> None:
        self.n += k
        now = time.monotonic()
        if now - self._last > 1.0:
            self._last = now
            of = f"/{self.total}" if self.total else ""
            print(f"\r{self.desc}: {self.n}{of} {self.unit}s", end="", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self._last:
            print(file=sys.stderr)


class _Off:
    def update(self, k: int) -> None:
        pass

    def close(self) -> None:
        pass


@contextlib.contextmanager
def progress_bar(*, total: Optional[int], enabled: bool, desc: str, unit: str = "it") -> Iterator:
    """A context manager yielding an object with ``update(k)``."""
    if not enabled:
        bar = _Off()
    else:
        try:
            from tqdm.auto import tqdm
            bar = tqdm(total=total, desc=desc, unit=unit, leave=False, dynamic_ncols=True)
        except ImportError:
            bar = _Plain(total, desc, unit)
    try:
        yield bar
    finally:
        bar.close()
