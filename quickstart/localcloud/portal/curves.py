"""Learning curves from a job's output: the recipe's ``Finished Epoch`` and ``Final Results``
lines, and the geometry of their SVG chart.

The chart is drawn by a Jinja template from the numbers here (no chart library): a few lines of
geometry give a static SVG that needs no script, so it passes the portal's strict content
policy and renders before any JavaScript runs (see tests/bench/README.md, issue 16).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

EPOCH = re.compile(
    r"Finished Epoch\[(\d+) of (\d+)\]: \[Training\] loss = ([\d.eE+-]+) \* \d+, "
    r"metric = ([\d.]+)% \* \d+"
)
FINAL = re.compile(r"Final Results: Minibatch\[[^\]]*\]: errs = ([\d.]+)% \* \d+")
COLOURS = ("#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2", "#4b5563")


@dataclass
class Curve:
    """One job's learning curve: (epoch, loss, training error %) per finished epoch."""

    label: str
    epochs: list[tuple[int, float, float]] = field(default_factory=list)
    total_epochs: int | None = None
    test_error: float | None = None


def parse_curve(label: str, text: str) -> Curve:
    curve = Curve(label)
    seen = set()
    for match in EPOCH.finditer(text):
        epoch = int(match.group(1))
        if epoch in seen:
            continue
        seen.add(epoch)
        curve.total_epochs = int(match.group(2))
        curve.epochs.append((epoch, float(match.group(3)), float(match.group(4))))
    final = FINAL.findall(text)
    if final:
        curve.test_error = float(final[-1])
    return curve


@dataclass
class Chart:
    width: int
    height: int
    left: int
    top: int
    plot_width: int
    plot_height: int
    x_ticks: list
    y_ticks: list
    lines: list  # [{"label", "colour", "points": [(x, y, title)], "path": "x,y x,y"}]
    y_label: str


def _nice_top(value: float) -> float:
    if value <= 0:
        return 1.0
    step = 10 ** math.floor(math.log10(value))
    for mult in (1, 2, 2.5, 5, 10):
        if value <= step * mult:
            return step * mult
    return step * 10


def chart(curves: list[Curve], metric: str, width: int = 640, height: int = 260) -> Chart | None:
    """The geometry of one chart: ``metric`` ("loss" or "error") per epoch, one line per curve.
    None when no curve has a finished epoch yet."""
    index = 1 if metric == "loss" else 2
    drawn = [c for c in curves if c.epochs]
    if not drawn:
        return None
    left, top, right, bottom = 56, 12, 16, 36
    plot_w, plot_h = width - left - right, height - top - bottom
    last_epoch = max(max(e[0] for e in c.epochs) for c in drawn)
    last_epoch = max(last_epoch, *(c.total_epochs or 1 for c in drawn))
    y_top = _nice_top(max(max(e[index] for e in c.epochs) for c in drawn))

    def x_of(epoch: int) -> float:
        return left + (plot_w * (epoch - 1) / (last_epoch - 1) if last_epoch > 1 else plot_w / 2)

    def y_of(value: float) -> float:
        return top + plot_h * (1 - value / y_top)

    lines = []
    for number, curve in enumerate(drawn):
        points = [
            (
                round(x_of(e[0]), 1),
                round(y_of(e[index]), 1),
                f"{curve.label}: epoch {e[0]}, "
                + (f"loss {e[1]:.4f}" if metric == "loss" else f"error {e[2]:.2f}%"),
            )
            for e in curve.epochs
        ]
        lines.append(
            {
                "label": curve.label,
                "colour": COLOURS[number % len(COLOURS)],
                "points": points,
                "path": " ".join(f"{x},{y}" for x, y, _ in points),
                "test_error": curve.test_error,
            }
        )
    step = max(1, math.ceil(last_epoch / 10))
    x_ticks = [(round(x_of(e), 1), e) for e in range(1, last_epoch + 1, step)]
    y_ticks = [(round(y_of(y_top * i / 4), 1), f"{y_top * i / 4:g}") for i in range(5)]
    return Chart(
        width,
        height,
        left,
        top,
        plot_w,
        plot_h,
        x_ticks,
        y_ticks,
        lines,
        "training loss" if metric == "loss" else "training error (%)",
    )
