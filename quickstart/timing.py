"""Wall time per step, for the summary line `run` prints at its end.

A user who waited several minutes wants to know where they went (starting the local cloud,
uploading, allocating the cluster, training, downloading) without a profiler, and the README's
figures are taken from the same line.
"""

import contextlib
import time


class StepClock:
    """Accumulates the wall time of named steps, in the order they first ran."""

    def __init__(self, clock=time.monotonic):
        self.clock = clock
        self.started = clock()
        self.seconds = {}

    @contextlib.contextmanager
    def step(self, name):
        """Time the body under `name`; a step entered twice adds up. Time is kept on errors too."""
        start = self.clock()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + self.clock() - start

    def summary(self):
        """One line: the total since the clock was made, then each step's share of it."""
        total = self.clock() - self.started
        parts = ", ".join(f"{name} {format_seconds(s)}" for name, s in self.seconds.items())
        return f"Wall time: {format_seconds(total)} in all ({parts})"


def format_seconds(seconds):
    """1.2 s, 12.3 s, 4m05.1s: short, and the same at every size so lines compare at a glance."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(seconds, 60)
    return f"{int(minutes):d}m{rest:04.1f}s"
