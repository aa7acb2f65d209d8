"""PNG plots with matplotlib's Agg canvas (no pyplot, no global backend switch, no display needed).

Deterministic: fixed sizes, colours and dpi, and no "Software" / date metadata in the PNG, so the same
inputs give byte-identical files on the same machine (same matplotlib and fonts).
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from mft import methods

# tab10: for lines that are not a method of the table (comparison inputs, unknown methods) and for bars.
_PALETTE = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
    "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
)  # fmt: skip
# Each method's own colour comes from the methods table, so it is the same in every plot and report.
_METHOD_COLOURS = {m.key: m.colour for m in methods.METHODS}
_DPI = 100


def colour(key: str, index: int) -> str:
    """The method's own colour, else the index-th of the palette."""
    return _METHOD_COLOURS.get(key) or _PALETTE[index % len(_PALETTE)]


@dataclass
class Series:
    label: str
    xs: list[int]
    ys: list[float]
    errs: list[float]
    colour: str
    dashed: bool = False  # a second line of the same method (same colour)


def _figure(width: float, height: float) -> Any:  # a matplotlib Figure (imported lazily)
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=_DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=_DPI, metadata={"Software": None})
    return buf.getvalue()


def line_plot(series: Sequence[Series], title: str, ylabel: str, xlabel: str = "iteration") -> bytes:
    """Lines with ± 1 s.e. error bars over integer x (iterations)."""
    fig = _figure(6.4, 4.0)
    ax = fig.add_subplot()
    for i, s in enumerate(series):
        offset = (i - (len(series) - 1) / 2) * 0.03  # keep overlapping error bars apart
        ax.errorbar(
            [x + offset for x in s.xs],
            s.ys,
            yerr=s.errs,
            label=s.label,
            color=s.colour,
            linestyle="--" if s.dashed else "-",
            marker="o",
            markersize=4,
            capsize=3,
            linewidth=1.6,
        )
    xs = sorted({x for s in series for x in s.xs})
    if xs:
        ax.set_xticks(xs)
    return _finish(fig, ax, title, xlabel, ylabel, legend=bool(series))


def _finish(fig: Any, ax: Any, title: str, xlabel: str, ylabel: str, legend: bool) -> bytes:
    """A line plot's labels, title, grid and legend, and its PNG bytes."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=11)
    ax.grid(True, alpha=0.3)
    if legend:
        ax.legend(fontsize=8, loc="best")
    return _png(fig)


def step_plot(series: Sequence[Series], title: str, ylabel: str, xlabel: str = "optimizer step") -> bytes:
    """Plain lines over many x (training steps): no markers or error bars, the axis' own ticks."""
    fig = _figure(6.4, 4.0)
    ax = fig.add_subplot()
    for s in series:
        ax.plot(s.xs, s.ys, label=s.label, color=s.colour, linestyle="--" if s.dashed else "-", linewidth=1.2)
    return _finish(fig, ax, title, xlabel, ylabel, legend=bool(series))


def grouped_bars(groups: list[str], bars: dict[str, list[float]], title: str, ylabel: str) -> bytes:
    """One group of bars per entry of `groups` (agents), one bar per key of `bars` (iterations)."""
    fig = _figure(max(6.4, 0.7 * len(groups) * max(1, len(bars)) / 2 + 2), 4.0)
    ax = fig.add_subplot()
    width = 0.8 / max(1, len(bars))
    for i, (name, values) in enumerate(bars.items()):
        xs = [g + (i - (len(bars) - 1) / 2) * width for g in range(len(groups))]
        ax.bar(xs, values, width=width, label=name, color=_PALETTE[i % len(_PALETTE)])
    ax.set_xticks(range(len(groups)), groups, rotation=30 if len(groups) > 6 else 0)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=11)
    ax.grid(True, axis="y", alpha=0.3)
    if bars:
        ax.legend(fontsize=8)
    return _png(fig)


def stacked_bars(
    panels: list[tuple[str, list[str], dict[str, list[float]]]], title: str, ylabel: str
) -> bytes:
    """One subplot per panel (title, x labels, {stack name: values}); bars stacked by stack name."""
    fig = _figure(max(6.4, 3.2 * len(panels)), 4.0)
    axes = fig.subplots(1, max(1, len(panels)), sharey=True, squeeze=False)[0]
    stack_names = list(dict.fromkeys(n for _, _, stacks in panels for n in stacks))
    for ax, (name, xlabels, stacks) in zip(axes, panels, strict=False):
        bottom = [0.0] * len(xlabels)
        for j, stage in enumerate(stack_names):
            values = stacks.get(stage, [0.0] * len(xlabels))
            ax.bar(range(len(xlabels)), values, bottom=bottom, label=stage, color=_PALETTE[j % len(_PALETTE)])
            bottom = [b + v for b, v in zip(bottom, values, strict=True)]
        ax.set_xticks(range(len(xlabels)), xlabels)
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("iteration")
        ax.grid(True, axis="y", alpha=0.3)
    axes[0].set_ylabel(ylabel)
    if stack_names:
        handles, names = axes[0].get_legend_handles_labels()
        fig.legend(handles, names, loc="outside right upper", fontsize=8)
    fig.suptitle(title, fontsize=11)
    return _png(fig)


@dataclass
class XYSeries:
    """Points with error bars on both axes, in order (one per iteration), each tagged (its iteration)."""

    label: str
    xs: list[float]
    ys: list[float]
    xerrs: list[float]
    yerrs: list[float]
    tags: list[str]
    colour: str


def scatter_panels(panels: Sequence[tuple[str, Sequence[XYSeries]]], title: str, ylabel: str) -> bytes:
    """One subplot per panel (x label, series), sharing the y axis: each series' points joined in order,
    ± 1 s.e. bars on both axes, each point tagged (the iteration)."""
    fig = _figure(max(6.4, 4.2 * len(panels)), 4.2)
    axes = fig.subplots(1, max(1, len(panels)), sharey=True, squeeze=False)[0]
    for ax, (xlabel, series) in zip(axes, panels, strict=False):
        for s in series:
            ax.errorbar(
                s.xs,
                s.ys,
                xerr=s.xerrs,
                yerr=s.yerrs,
                label=s.label,
                color=s.colour,
                marker="o",
                markersize=4,
                capsize=3,
                linewidth=1.2,
            )
            for x, y, tag in zip(s.xs, s.ys, s.tags, strict=True):
                ax.annotate(
                    tag, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7, color=s.colour
                )
        ax.set_xlabel(xlabel)
        ax.grid(True, alpha=0.3)
    axes[0].set_ylabel(ylabel)
    legend: dict[str, Any] = {}  # every series once, from whichever panel has it
    for ax in axes:
        for handle, name in zip(*ax.get_legend_handles_labels(), strict=True):
            legend.setdefault(name, handle)
    if legend:
        axes[0].legend(list(legend.values()), list(legend), fontsize=8, loc="best")
    fig.suptitle(title, fontsize=11)
    return _png(fig)
