"""Progress of a long loop (epochs, iterations, rows written) as a handful of log lines.

dbt prints every info line of every node: a line per epoch floods the console of a 200-epoch model.
A Progress logs at info at most `lines` times, at each tenth of the way, with the figures of that step
and an estimate of the time left; every step goes to the debug log (logs/dbt.log)."""

import logging
import time
from typing import Optional

LINES = 10


class Progress:
    def __init__(self, log: logging.Logger, what: str, total: int, lines: int = LINES):
        self.log, self.what, self.total, self.lines = log, what, max(1, int(total)), lines
        self.started = time.perf_counter()
        self.shown = 0
        self.tenth = 1  # the last tenth shown: the first step, then the 2nd to the 10th tenth

    def step(self, done: int, detail: str = "") -> bool:
        """Step `done` (1-based) of the total is over; returns whether it was shown at info. Steps
        may be skipped (a loop that reports every n-th step): a tenth passed since is shown."""
        tenth = min(done, self.total) * self.lines // self.total
        shown = tenth > self.tenth or self.shown == 0
        self.tenth = max(self.tenth, tenth)
        elapsed = time.perf_counter() - self.started
        text = f"{self.what} {done}/{self.total}" + (f": {detail}" if detail else "")
        if shown:
            self.shown += 1
            left = _left(elapsed, done, self.total)
            self.log.info(text + (f" ({elapsed:.0f} s, ~{left} left)" if left else ""))
        else:
            self.log.debug(text)
        return shown


def _left(elapsed: float, done: int, total: int) -> Optional[str]:
    if done >= total or elapsed < 1:
        return None
    seconds = elapsed / done * (total - done)
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min"
