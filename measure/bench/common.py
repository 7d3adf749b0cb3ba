"""Small helpers shared by the benchmark sections: ports, percentiles, quiet stdout."""

from __future__ import annotations

import contextlib
import os
import socket
import statistics
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from toolkit.names import ROOT

OUT_DIR = ROOT / "build" / "bench"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pct(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile; NaN for no values (a section that produced nothing)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


class Progress(Protocol):
    """What the sections need of the progress bar (a tqdm, or a no-op in tests)."""

    def update(self, n: float = 1) -> Any: ...

    def set_description_str(self, desc: str | None = None, refresh: bool = True) -> Any: ...

    def set_postfix_str(self, s: str = "", refresh: bool = True) -> Any: ...


class NullProgress:
    """A progress bar that draws nothing (running one section on its own)."""

    def update(self, n: float = 1) -> None: ...

    def set_description_str(self, desc: str | None = None, refresh: bool = True) -> None: ...

    def set_postfix_str(self, s: str = "", refresh: bool = True) -> None: ...


@dataclass(frozen=True, slots=True)
class Percentiles:
    p50: float
    p95: float
    p99: float
    max: float
    n: int

    @classmethod
    def of(cls, values: Sequence[float]) -> Percentiles:
        return cls(
            p50=statistics.median(values) if values else float("nan"),
            p95=pct(values, 95),
            p99=pct(values, 99),
            max=max(values) if values else float("nan"),
            n=len(values),
        )


@contextlib.contextmanager
def stdout_to_devnull() -> Iterator[None]:
    """Send file descriptor 1 to /dev/null for the duration.

    The app logs JSON lines to stdout (Powertools) and may grow other stdout
    writers (metrics); redirecting the descriptor silences them all however
    they hold the stream, while tqdm keeps drawing on stderr.
    """
    sys.stdout.flush()
    saved = os.dup(1)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 1)
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)
        os.close(devnull)
