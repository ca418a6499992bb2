"""Phase timers: how the training loop measures what each part of a step costs.

The optimizer wraps each phase of a step in `timer.phase(name)`; the names are
`ascent` (passes at θ0…θ(k-1)), `descent` (the pass at θk), `probe` (the α
search) and `update` (vector arithmetic and the base optimizer's step).
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext

PHASES = ("ascent", "descent", "probe", "update")


class NullTimer:
    """Measures nothing; the default, so an untimed step pays nothing."""

    def phase(self, name: str) -> AbstractContextManager[None]:
        return nullcontext()


class PhaseTimer(NullTimer):
    """Accumulates wall-clock seconds per phase.

    Args:
        synchronize: called before each clock reading, e.g.
            `torch.cuda.synchronize`, so asynchronous device work is charged to
            the phase that launched it.
    """

    def __init__(self, synchronize: Callable[[], None] | None = None) -> None:
        self.synchronize = synchronize or (lambda: None)
        self.seconds: dict[str, float] = defaultdict(float)

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        self.synchronize()
        start = time.perf_counter()
        try:
            yield
        finally:
            self.synchronize()
            self.seconds[name] += time.perf_counter() - start

    def reset(self) -> dict[str, float]:
        """Return the totals so far and start again from zero."""
        totals = dict(self.seconds)
        self.seconds.clear()
        return totals
