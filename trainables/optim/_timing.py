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


_NOTHING = nullcontext()  # reusable: it holds no state


class NullTimer:
    """Measures nothing; the default, so an untimed step pays nothing."""

    def phase(self, name: str) -> AbstractContextManager[None]:
        return _NOTHING


class PhaseTimer(NullTimer):
    """Accumulates wall-clock and process CPU seconds per phase.

    The CPU seconds (`time.process_time`: every thread of this process, so
    torch's intra-op threads count) are the trial's own work: a neighbour
    sharing the cores stretches the wall time but not them. On a GPU they
    say little (the device's work is not CPU time); the wall times there
    are taken with the device synchronised.

    Args:
        synchronize: called before each clock reading, e.g.
            `torch.cuda.synchronize`, so asynchronous device work is charged to
            the phase that launched it.
    """

    def __init__(self, synchronize: Callable[[], None] | None = None) -> None:
        self.synchronize = synchronize or (lambda: None)
        self.seconds: dict[str, float] = defaultdict(float)
        self.cpu_seconds: dict[str, float] = defaultdict(float)

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        self.synchronize()
        start, cpu_start = time.perf_counter(), time.process_time()
        try:
            yield
        finally:
            self.synchronize()
            self.seconds[name] += time.perf_counter() - start
            self.cpu_seconds[name] += time.process_time() - cpu_start

    def reset(self) -> dict[str, float]:
        """Return the wall-clock totals so far and start again from zero (CPU totals too)."""
        totals = dict(self.seconds)
        self.seconds.clear()
        self.cpu_seconds.clear()
        return totals
