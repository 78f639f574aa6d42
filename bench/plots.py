"""The benchmarks' plots: matplotlib on the Agg backend (no display), written as bench/results/*.png."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
from matplotlib.figure import Figure

RESULTS = Path(__file__).resolve().parent / "results"


def grouped_bars(
    name: str,
    *,
    title: str,
    groups: Sequence[str],
    series: dict[str, Sequence[float]],
    ylabel: str,
    value_format: str = "{:,.0f}",
) -> Path:
    """Bars of each series side by side within each group, each bar labelled with its value."""
    figure, axes = plt.subplots(figsize=(7, 4))
    width = 0.8 / len(series)
    for index, (label, values) in enumerate(series.items()):
        positions = [group + (index - (len(series) - 1) / 2) * width for group in range(len(groups))]
        bars = axes.bar(positions, values, width, label=label)
        axes.bar_label(bars, labels=[value_format.format(value) for value in values], fontsize=8)
    axes.set_xticks(range(len(groups)), groups)
    axes.set_ylabel(ylabel)
    axes.set_title(title)
    axes.legend(fontsize=8)
    axes.margins(y=0.15)
    return save(figure, name)


def bars(
    name: str, *, title: str, labels: Sequence[str], values: Sequence[float], ylabel: str, value_format: str
) -> Path:
    """One bar per label, each labelled with its value."""
    figure, axes = plt.subplots(figsize=(7, 4))
    drawn = axes.bar(labels, values, color=[f"C{index}" for index in range(len(values))])
    axes.bar_label(drawn, labels=[value_format.format(value) for value in values], fontsize=8)
    axes.set_ylabel(ylabel)
    axes.set_title(title)
    axes.margins(y=0.15)
    return save(figure, name)


def lines(
    name: str,
    *,
    title: str,
    xs: Sequence[float],
    series: dict[str, Sequence[float]],
    xlabel: str,
    ylabel: str,
    log: bool = False,
) -> Path:
    """One marked line per series over ``xs`` (both axes logarithmic with ``log``)."""
    figure, axes = plt.subplots(figsize=(7, 4))
    for label, values in series.items():
        axes.plot(xs, values, marker="o", label=label)
    if log:
        axes.set_xscale("log")
        axes.set_yscale("log")
    axes.set_xticks(list(xs), [f"{x:,g}" for x in xs])
    axes.set_xlabel(xlabel)
    axes.set_ylabel(ylabel)
    axes.set_title(title)
    axes.grid(True, which="both", alpha=0.3)
    if len(series) > 1:
        axes.legend(fontsize=8)
    return save(figure, name)


def save(figure: Figure, name: str) -> Path:
    """Write ``figure`` as bench/results/<name>.png and close it."""
    path = RESULTS / f"{name}.png"
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def link(path: Path) -> str:
    """A Markdown image of ``path`` relative to bench/results/ (run_all.py rebases it for RESULTS.md)."""
    return f"![{path.stem}]({path.name})"
