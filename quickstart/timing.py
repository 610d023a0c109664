"""Wall time per step, for the summary line `run` prints at its end.

A user who waited several minutes wants to know where they went (starting the local cloud,
uploading, allocating the cluster, training, downloading) without a profiler, and the README's
figures are taken from the same line. The steps are marked with `@timed("name")` so that the
timing stays out of the tutorial's story; a step counts only while a clock is running (the `run`
command), so unit tests and other callers see nothing of it.
"""

import contextlib
import contextvars
import functools
import time

_running_clock = contextvars.ContextVar("running_clock", default=None)


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

    @contextlib.contextmanager
    def running(self):
        """Within the body, the steps marked `@timed` count on this clock."""
        token = _running_clock.set(self)
        try:
            yield self
        finally:
            _running_clock.reset(token)

    def summary(self):
        """One line: the total since the clock was made, then each step's share of it."""
        total = self.clock() - self.started
        parts = ", ".join(f"{name} {format_seconds(s)}" for name, s in self.seconds.items())
        return f"Wall time: {format_seconds(total)} in all ({parts})"


def timed(name):
    """Mark a step: its calls count under `name` on the running clock, if there is one."""

    def decorate(step):
        @functools.wraps(step)
        def timed_step(*args, **kwargs):
            clock = _running_clock.get()
            if clock is None:
                return step(*args, **kwargs)
            with clock.step(name):
                return step(*args, **kwargs)

        return timed_step

    return decorate


def format_seconds(seconds):
    """1.2 s, 12.3 s, 4m05.1s: short, and the same at every size so lines compare at a glance."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(seconds, 60)
    return f"{int(minutes):d}m{rest:04.1f}s"
